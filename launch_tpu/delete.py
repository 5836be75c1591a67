"""Deletes a TPU VM (and its queued resource with `--queued`).

    python -m launch_tpu.delete --name=align --zone=us-west4-a --project=my-project --queued \
        --dry_run
"""

from __future__ import annotations

from launch_tpu import common


def commands(args) -> list[list[str]]:
  if args.queued:
    return [["gcloud", "compute", "tpus", "queued-resources", "delete", args.name,
             *common.location(args), "--force", "--quiet"]]
  return [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, *common.location(args),
           "--quiet"]]


def main(argv=None) -> None:
  parser = common.tpu_parser(__doc__.splitlines()[0])
  parser.add_argument("--queued", action="store_true", help="It was created as a queued resource.")
  args = parser.parse_args(argv)
  common.execute(commands(args), dry_run=args.dry_run)


if __name__ == "__main__":
  main()
