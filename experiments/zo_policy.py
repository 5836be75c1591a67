r"""Policy search on CartPole from rankings of episode returns, ZO-RankSGD against a value-based
evolution strategy: the recipe `alignment.recipes.zo_policy` (protocol and figures in
`docs/zo.md`). Writes `summary.json` and `return_vs_episodes.png`.

  python -m experiments.zo_policy --workdir=/tmp/zo_policy [--fast]

`--seeds` and `--iterations` override the sizes of the comparison (or of `--fast`). This binary
takes these flags instead of `--config`.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from alignment.recipes import zo_policy
from experiments import _flags

FLAGS = flags.FLAGS


def main(config_dict, workdir: str) -> None:
  del config_dict  # the comparison's config comes from the flags of this binary
  config = zo_policy.fast_config() if FLAGS.fast else zo_policy.Config()
  sizes = {name: FLAGS[name].value for name in ("seeds", "iterations")
           if FLAGS[name].value is not None}
  zo_policy.run(dataclasses.replace(config, **sizes), workdir)


if __name__ == "__main__":
  flags.DEFINE_bool("fast", False, "Tiny smoke run (2 seeds, 3 iterations, horizon 100).")
  flags.DEFINE_integer("seeds", None, "Number of seeds (default: the comparison's).")
  flags.DEFINE_integer("iterations", None, "Iterations of m episodes each (default: the "
                       "comparison's).")
  _flags.run_main(main, config_file=None)
