"""Fetches each worker's log of a run (`~/logs/RUN_NAME.log`), or follows one worker's log.

    python -m launch_tpu.logs --name=align --zone=us-west4-a --project=my-project \
        --run_name=dpo1 --num_workers=4 --dest=logs/dpo1 --dry_run
"""

from __future__ import annotations

import os

from launch_tpu import common


def commands(args) -> list[list[str]]:
  log = f"{common.LOG_DIR}/{args.run_name}.log"
  if args.follow is not None:
    return [common.ssh(args, f"tail -n +1 -f {log}", worker=str(args.follow))]
  return [["mkdir", "-p", args.dest]] + [
      ["gcloud", "compute", "tpus", "tpu-vm", "scp", f"{args.name}:{log}",
       os.path.join(args.dest, f"{args.run_name}.worker{i}.log"), *common.location(args),
       f"--worker={i}"]
      for i in range(args.num_workers)
  ]


def main(argv=None) -> None:
  parser = common.tpu_parser(__doc__.splitlines()[0])
  parser.add_argument("--run_name", required=True)
  parser.add_argument("--num_workers", type=int, default=1, help="Hosts of the slice.")
  parser.add_argument("--dest", default="logs", help="Local directory for the fetched logs.")
  parser.add_argument("--follow", type=int, default=None, metavar="WORKER",
                      help="Stream this worker's log instead of fetching all of them.")
  args = parser.parse_args(argv)
  common.execute(commands(args), dry_run=args.dry_run)


if __name__ == "__main__":
  main()
