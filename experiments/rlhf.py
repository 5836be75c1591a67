"""RLHF: on-policy group policy-gradient training of the SFT policy, then evaluation
(`alignment.recipes.rlhf`).

    python -m experiments.rlhf --config=experiments/configs/rlhf.py --workdir=/tmp/rlhf \
        [--config.rlhf.init=/tmp/sft] [--config.rlhf.advantage=rloo --config.rlhf.kl_in=reward]

Writes `params.msgpack`, `metrics.jsonl` (one row per round), checkpoints, `eval.json` (held-out
win rate against the SFT policy, with the run's summary; `rlhf.json` with
`--config.rlhf.evaluate=False`) and `rlhf.png`; re-running with the same workdir resumes.
"""

from alignment.recipes import rlhf
from experiments import _flags

if __name__ == "__main__":
  _flags.run_recipe(rlhf, config_file="rlhf.py")
