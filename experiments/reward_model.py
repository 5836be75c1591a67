"""Reward-model training: Bradley–Terry on pairs or Plackett–Luce on lists, held-out accuracy
(`alignment.recipes.reward_model`).

    python -m experiments.reward_model --config=experiments/configs/reward_model.py \
        --workdir=/tmp/rm [--config.reward_model.heads=attributes \
        --config.reward_model.labels=per_attribute] [--config.data.attribute=harmlessness]

Writes `params.msgpack`, `metrics.jsonl` (training rows and `heldout/*` rows), checkpoints,
`eval.json` and `reward_model.png`; re-running with the same workdir resumes.
"""

from alignment.recipes import reward_model
from experiments import _flags

if __name__ == "__main__":
  _flags.run_recipe(reward_model, config_file="reward_model.py")
