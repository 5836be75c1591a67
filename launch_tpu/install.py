"""Copies this repository to every worker of a TPU VM and installs it with JAX for TPU.

    python -m launch_tpu.install --name=align --zone=us-west4-a --project=my-project --dry_run
"""

from __future__ import annotations

import os

from launch_tpu import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHIVE = "/tmp/alignment.tar.gz"


def commands(args) -> list[list[str]]:
  remote = (f"mkdir -p {common.REPO_DIR} && tar xzf ~/alignment.tar.gz -C {common.REPO_DIR} && "
            f"pip install -U 'jax[tpu]=={args.jax_version}' && "
            f'pip install -e "$HOME/{common.REPO_NAME}[{args.extras}]"')
  return [
      ["tar", "czf", ARCHIVE, "--exclude=.git", "--exclude=workdir", "-C", args.repo, "."],
      ["gcloud", "compute", "tpus", "tpu-vm", "scp", ARCHIVE, f"{args.name}:~/alignment.tar.gz",
       *common.location(args), "--worker=all"],
      common.ssh(args, remote),
  ]


def main(argv=None) -> None:
  parser = common.tpu_parser(__doc__.splitlines()[0])
  parser.add_argument("--repo", default=ROOT, help="Local checkout to copy (default: this one).")
  parser.add_argument("--jax_version", default="0.10.2", help="Same JAX as the tests use.")
  parser.add_argument("--extras", default="hf", help="pip extras of the package.")
  args = parser.parse_args(argv)
  common.execute(commands(args), dry_run=args.dry_run)


if __name__ == "__main__":
  main()
