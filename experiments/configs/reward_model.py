"""Config of `experiments/reward_model.py`: the defaults of the recipe
`alignment.recipes.reward_model`.

    python -m experiments.reward_model --config=experiments/configs/reward_model.py \
        --workdir=/tmp/rm [--config.reward_model.heads=attributes] [--config.loss.name=bradley_terry]

Sections: `model`, `task`, `mesh` (the demo's), `data` (candidate responses and their rater),
`reward_model` (heads and labels), `loss`, `train`, `evaluate` (held-out lists). About a minute on
a 2-core CPU; held-out pairwise accuracy 0.84-0.87 even with a temperature-1 rater
(`--config.data.rater_temperature=1.0`).
"""

import ml_collections

from alignment.recipes import config as config_lib
from alignment.recipes import reward_model


def get_config():
  return ml_collections.ConfigDict(config_lib.to_dict(reward_model.Config()))
