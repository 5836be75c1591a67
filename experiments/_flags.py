"""Flags shared by every binary: `--config=experiments/configs/NAME.py`, `--workdir`, and the
multi-host flags (`--coordinator_address`, `--num_processes`, `--process_id`; on a TPU VM slice
or under SLURM they are detected, see `alignment.parallel.initialize`)."""

import os

from absl import flags
from ml_collections import config_flags

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "demo.py")

CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Path to a config file; override fields with --config.a.b=v."
)
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


def run_recipe(recipe) -> None:
  """`app.run` of a binary that calls `recipe.run(typed(recipe.Config, --config), --workdir)`."""
  run_main(lambda config, workdir: recipe.run(typed(recipe.Config, config), workdir))


def run_main(run_fn) -> None:
  """`app.run` of a binary whose body is `run_fn(config, workdir)` (warnings-only logging)."""
  from absl import app, logging  # pylint: disable=import-outside-toplevel

  def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from alignment import parallel  # pylint: disable=import-outside-toplevel

    parallel.initialize(coordinator_address=COORDINATOR_ADDRESS.value,
                        num_processes=NUM_PROCESSES.value, process_id=PROCESS_ID.value)
    run_fn(CONFIG.value, WORKDIR.value)

  app.run(main)
