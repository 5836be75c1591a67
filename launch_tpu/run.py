"""Runs a binary on every worker of a TPU VM at once (`--worker=all`), streaming the output.

    python -m launch_tpu.run --name=align --zone=us-west4-a --project=my-project \
        --run_name=dpo1 --dry_run -- experiments.train --workdir=/mnt/work/dpo1

Each worker runs the same command; `alignment.parallel.initialize()` (called by every binary)
finds the other workers through JAX's TPU cluster detection, so no addresses are passed. Each
worker also writes its output to `~/logs/RUN_NAME.log` (fetch them with `launch_tpu.logs`). The
workdir must be a directory that all workers share (e.g. a gcsfuse or Filestore mount).
"""

from __future__ import annotations

import shlex

from launch_tpu import common

ENVIRONMENT = ("PYTHONUNBUFFERED=1",)  # stream output line by line


def commands(args) -> list[list[str]]:
  if not args.binary:
    raise ValueError("run: name the binary after `--`, e.g. `-- experiments.train --workdir=...`.")
  env = " ".join(ENVIRONMENT + tuple(args.env))
  binary = shlex.join(["python", "-m", *args.binary])
  log = f"{common.LOG_DIR}/{args.run_name}.log"
  remote = (f"mkdir -p {common.LOG_DIR} && cd {common.REPO_DIR} && "
            f"{env} {binary} 2>&1 | tee {log}")
  return [common.ssh(args, remote)]


def main(argv=None) -> None:
  parser = common.tpu_parser(__doc__.splitlines()[0])
  parser.add_argument("--run_name", required=True, help="Names the per-worker log files.")
  parser.add_argument("--env", action="append", default=[], help="Extra KEY=VALUE (repeat).")
  parser.add_argument("binary", nargs="*", help="After `--`: module and its flags.")
  args = parser.parse_args(argv)
  common.execute(commands(args), dry_run=args.dry_run)


if __name__ == "__main__":
  main()
