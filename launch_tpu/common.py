"""What the launch scripts share: the gcloud flags of a TPU VM and running (or printing) commands.

Every script takes `--dry_run`, which prints the exact commands, one per line (as `shlex.join`
writes them), instead of running them.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence

REPO_NAME = "alignment"
REPO_DIR = f"~/{REPO_NAME}"  # where install.py puts the package on every worker
LOG_DIR = "~/logs"  # where run.py writes each worker's log


def tpu_parser(description: str) -> argparse.ArgumentParser:
  """A parser with the flags every TPU script takes: `--name --zone --project --dry_run`."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--name", required=True, help="TPU VM (and queued resource) name.")
  parser.add_argument("--zone", required=True, help="e.g. us-west4-a (v5e), us-east5-a (v5p).")
  parser.add_argument("--project", required=True, help="Google Cloud project id.")
  parser.add_argument("--dry_run", action="store_true", help="Print the commands; run nothing.")
  return parser


def location(args: argparse.Namespace) -> list[str]:
  return [f"--zone={args.zone}", f"--project={args.project}"]


def ssh(args: argparse.Namespace, command: str, *, worker: str = "all") -> list[str]:
  """`gcloud ... tpu-vm ssh` running `command` on `worker` ("all" or an index)."""
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, *location(args),
          f"--worker={worker}", f"--command={command}"]


def execute(commands: Sequence[Sequence[str]], *, dry_run: bool) -> None:
  """Runs the commands in order (stopping at the first failure), or prints them."""
  for command in commands:
    if dry_run:
      print(shlex.join(command))
      continue
    print("+ " + shlex.join(command), file=sys.stderr, flush=True)
    subprocess.run(list(command), check=True)
