r"""ZO-RankSGD against value-based and sign ZO, GLD and CMA-ES on Rosenbrock and a low-rank
quadratic (d = 100): the recipe `alignment.recipes.zo_synthetic` (protocol and figures in
`docs/zo.md`). Writes `summary.json`, `objective_vs_queries.png` and `ablation.png`.

  python -m experiments.zo_synthetic --workdir=/tmp/zo_synthetic           # full (minutes)
  python -m experiments.zo_synthetic --workdir=/tmp/zo_synthetic --fast    # smoke run

`--seeds` and `--iterations` override the sizes of the study (or of `--fast`). This binary takes
these flags instead of `--config`.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags

from alignment.recipes import zo_synthetic
from experiments import _flags

FLAGS = flags.FLAGS


def main(config_dict, workdir: str) -> None:
  del config_dict  # the study's config comes from the flags of this binary
  config = zo_synthetic.fast_config() if FLAGS.fast else zo_synthetic.Config()
  sizes = {name: FLAGS[name].value for name in ("seeds", "iterations")
           if FLAGS[name].value is not None}
  zo_synthetic.run(dataclasses.replace(config, **sizes), workdir)


if __name__ == "__main__":
  # One BLAS thread, set before numpy's first use: multi-threaded BLAS inside `cma`
  # oversubscribes a small shared CPU (measured 10x slower CMA-ES iterations).
  os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
  flags.DEFINE_bool("fast", False, "Tiny smoke run (2 seeds, 5 iterations, small ablation).")
  flags.DEFINE_integer("seeds", None, "Number of seeds (default: the study's).")
  flags.DEFINE_integer("iterations", None, "Iterations per run (default: the study's).")
  _flags.run_main(main, config_file=None)
