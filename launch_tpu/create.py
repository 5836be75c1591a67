"""Creates a TPU VM slice, directly or through a queued resource (waits until it is ACTIVE).

    python -m launch_tpu.create --name=align --zone=us-west4-a --project=my-project \
        --accelerator_type=v5litepod-16 --queued --dry_run
"""

from __future__ import annotations

import subprocess
import sys
import time

from launch_tpu import common

RUNTIME_VERSIONS = {"v5litepod": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5",
                    "v6e": "v2-alpha-tpuv6e", "v4": "tpu-ubuntu2204-base"}


def commands(args) -> list[list[str]]:
  version = args.runtime_version or RUNTIME_VERSIONS.get(args.accelerator_type.split("-")[0])
  if version is None:
    raise ValueError(f"No default runtime version for {args.accelerator_type!r}; pass "
                     f"--runtime_version (defaults exist for {sorted(RUNTIME_VERSIONS)}).")
  spot = ["--spot"] if args.spot else []
  if not args.queued:
    return [["gcloud", "compute", "tpus", "tpu-vm", "create", args.name, *common.location(args),
             f"--accelerator-type={args.accelerator_type}", f"--version={version}", *spot]]
  return [["gcloud", "compute", "tpus", "queued-resources", "create", args.name,
           f"--node-id={args.name}", *common.location(args),
           f"--accelerator-type={args.accelerator_type}", f"--runtime-version={version}", *spot]]


def state_command(args) -> list[str]:
  return ["gcloud", "compute", "tpus", "queued-resources", "describe", args.name,
          *common.location(args), "--format=value(state.state)"]


def main(argv=None) -> None:
  parser = common.tpu_parser(__doc__.splitlines()[0])
  parser.add_argument("--accelerator_type", required=True, help="e.g. v5litepod-16, v5p-32.")
  parser.add_argument("--runtime_version", default="", help="default: by TPU generation.")
  parser.add_argument("--queued", action="store_true", help="Create through a queued resource.")
  parser.add_argument("--spot", action="store_true", help="Spot (preemptible) capacity.")
  parser.add_argument("--poll_seconds", type=float, default=30.0)
  args = parser.parse_args(argv)
  common.execute(commands(args), dry_run=args.dry_run)
  if not args.queued:
    return
  if args.dry_run:  # what the script polls until the state is ACTIVE
    common.execute([state_command(args)], dry_run=True)
    return
  while True:
    state = subprocess.run(state_command(args), check=True, capture_output=True,
                           text=True).stdout.strip()
    print(f"queued resource {args.name}: {state}", file=sys.stderr, flush=True)
    if state == "ACTIVE":
      return
    if state in ("FAILED", "SUSPENDED"):
      raise SystemExit(f"Queued resource {args.name} is {state}.")
    time.sleep(args.poll_seconds)


if __name__ == "__main__":
  main()
