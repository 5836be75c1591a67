"""Writes a SLURM batch script for a multi-node GPU run of a binary and submits it (`sbatch`).

    python -m launch_tpu.slurm --nodes=2 --gpus_per_node=8 --partition=gpu \
        --script=/tmp/dpo1.sbatch --dry_run -- experiments.train --workdir=/nfs/dpo1

The script comes from `slurm_gpu.sbatch`. With `--dry_run` it prints the script, then the
`sbatch` command, and writes and submits nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex

from launch_tpu import common

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slurm_gpu.sbatch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def render(args) -> str:
  """The batch script of `args` (the template with its fields filled in)."""
  if not args.binary:
    raise ValueError("slurm: name the binary after `--`, e.g. `-- experiments.train ...`.")
  with open(TEMPLATE, encoding="utf-8") as f:
    template = f.read()
  extra = [f"#SBATCH --partition={args.partition}"] if args.partition else []
  extra += [f"#SBATCH --account={args.account}"] if args.account else []
  return template.format(
      job_name=args.job_name, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
      cpus_per_task=args.cpus_per_task, time=args.time, log_dir=args.log_dir,
      extra_directives="\n".join(extra), repo=args.repo, binary=shlex.join(args.binary),
  ).replace("\n\n", "\n")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--nodes", type=int, required=True)
  parser.add_argument("--gpus_per_node", type=int, default=8)
  parser.add_argument("--cpus_per_task", type=int, default=12)
  parser.add_argument("--time", default="04:00:00")
  parser.add_argument("--job_name", default="alignment")
  parser.add_argument("--partition", default="")
  parser.add_argument("--account", default="")
  parser.add_argument("--log_dir", default="slurm_logs", help="Where SLURM writes the output.")
  parser.add_argument("--repo", default=ROOT, help="The checkout on the shared filesystem.")
  parser.add_argument("--script", default="alignment.sbatch", help="Batch script to write.")
  parser.add_argument("--dry_run", action="store_true", help="Print the script and command.")
  parser.add_argument("binary", nargs="*", help="After `--`: module and its flags.")
  args = parser.parse_args(argv)
  script = render(args)
  if args.dry_run:
    print(script, end="")
  else:
    os.makedirs(args.log_dir, exist_ok=True)
    with open(args.script, "w", encoding="utf-8") as f:
      f.write(script)
  common.execute([["sbatch", args.script]], dry_run=args.dry_run)


if __name__ == "__main__":
  main()
