"""Flags shared by every binary: `--config=experiments/configs/NAME.py` and `--workdir`."""

import os

from absl import flags
from ml_collections import config_flags

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "demo.py")

CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Path to a config file; override fields with --config.a.b=v."
)
WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
flags.mark_flag_as_required("workdir")


def run_main(run_fn) -> None:
  """`app.run` of a binary whose body is `run_fn(config, workdir)` (warnings-only logging)."""
  from absl import app, logging  # pylint: disable=import-outside-toplevel

  def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    run_fn(CONFIG.value, WORKDIR.value)

  app.run(main)
