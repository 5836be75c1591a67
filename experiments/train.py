"""Offline preference training with any registered objective, Curry-DPO curricula and online
rounds (`alignment.recipes.preference_training`).

    python -m experiments.train --workdir=/tmp/train --config.loss.name=dpo \
        --config.train.init=/tmp/sft --config.train.data=/tmp/prefs/preferences.jsonl

The policy starts from `train.init` (an SFT workdir), which is also the reference model.
Writes `params.msgpack`, `metrics.jsonl`, TensorBoard events, checkpoints and `data_stats.json`.
"""

from alignment.recipes import preference_training
from experiments import _flags

if __name__ == "__main__":
  _flags.run_recipe(preference_training)
