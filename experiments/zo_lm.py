r"""ZO-RankSGD on an output-logit bias of the tiny SFT policy from ranking feedback only: the
recipe `alignment.recipes.zo_lm` (setting and figures in `docs/zo.md`). Writes `summary.json`
and `reward_vs_round.png`.

    python -m experiments.zo_lm --workdir=/tmp/zo_lm [--policy=/tmp/sft] [--fast]
    python -m experiments.zo_lm --workdir=/tmp/zo_lm --interactive --m=4 --k=2 --rounds=10

`--interactive`: you rank the candidates at the terminal (m = 4, k = 2, one seed unless given).
`--policy` loads an SFT workdir or params file instead of training one in `workdir/sft`. This
binary takes these flags instead of `--config`.
"""

from __future__ import annotations

from absl import flags

from alignment.recipes import zo_lm
from alignment.recipes.config import replace_in
from experiments import _flags

FLAGS = flags.FLAGS
_OVERRIDES = ("policy", "rounds", "seeds", "m", "k")


def main(config_dict, workdir: str) -> None:
  del config_dict  # the run's config comes from the flags of this binary
  config = zo_lm.fast_config() if FLAGS.fast else zo_lm.Config()
  changes = dict(interactive=True, m=4, k=2, seeds=1) if FLAGS.interactive else {}
  changes.update({name: FLAGS[name].value for name in _OVERRIDES
                  if FLAGS[name].value is not None})
  zo_lm.run(replace_in(config, "zo", **changes), workdir)


if __name__ == "__main__":
  flags.DEFINE_string("policy", None, "SFT workdir or params file (default: train one here).")
  flags.DEFINE_integer("rounds", None, "ZO-RankSGD rounds, m oracle queries each.")
  flags.DEFINE_integer("seeds", None, "Independent runs from the same policy.")
  flags.DEFINE_integer("m", None, "Candidates per round.")
  flags.DEFINE_integer("k", None, "Candidates the oracle returns, top-k best first.")
  flags.DEFINE_bool("interactive", False, "A person ranks the candidates at the terminal.")
  flags.DEFINE_bool("fast", False, "Tiny smoke run (short SFT, 6 rounds of m = 6, one seed).")
  _flags.run_main(main, config_file=None)
