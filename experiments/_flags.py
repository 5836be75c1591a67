"""Flags shared by every binary: `--config=experiments/configs/NAME.py` (each binary names its
default file), `--workdir`, and the multi-host flags (`--coordinator_address`, `--num_processes`,
`--process_id`; on a TPU VM slice or under SLURM they are detected, see
`alignment.parallel.initialize`)."""

import os

from absl import flags
from ml_collections import config_flags

_CONFIGS = os.path.join(os.path.dirname(__file__), "configs")
WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
flags.mark_flag_as_required("workdir")
COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 in a multi-process run (default: from "
    "JAX_COORDINATOR_ADDRESS, or detected on a TPU VM slice / under SLURM).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")


def typed(config_cls, config):
  """The recipe config `config_cls` (a frozen dataclass) from the ConfigDict `config`."""
  from alignment.recipes.config import from_dict  # pylint: disable=import-outside-toplevel

  return from_dict(config_cls, config.to_dict())


def run_recipe(recipe, *, config_file: str = "demo.py") -> None:
  """`app.run` of a binary that calls `recipe.run(typed(recipe.Config, --config), --workdir)`;
  `--config` defaults to `experiments/configs/<config_file>`."""
  run_main(lambda config, workdir: recipe.run(typed(recipe.Config, config), workdir),
           config_file=config_file)


def run_main(run_fn, *, config_file: str | None = "demo.py") -> None:
  """`app.run` of a binary whose body is `run_fn(config, workdir)` (warnings-only logging).

  `--config` defaults to `experiments/configs/<config_file>`; with `config_file=None` the binary
  takes no `--config` (its own flags set it up) and `run_fn` gets `None`.
  """
  from absl import app, logging  # pylint: disable=import-outside-toplevel

  config = None
  if config_file is not None:
    config = config_flags.DEFINE_config_file(
        "config", os.path.join(_CONFIGS, config_file),
        "Path to a config file; override fields with --config.a.b=v.")

  def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from alignment import parallel  # pylint: disable=import-outside-toplevel

    parallel.initialize(coordinator_address=COORDINATOR_ADDRESS.value,
                        num_processes=NUM_PROCESSES.value, process_id=PROCESS_ID.value)
    run_fn(None if config is None else config.value, WORKDIR.value)

  app.run(main)
