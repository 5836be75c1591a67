"""Config of `experiments/rlhf.py`: the defaults of `alignment.recipes.rlhf.Config`.

    python -m experiments.rlhf --config=experiments/configs/rlhf.py --workdir=/tmp/rlhf

Sections: `model`, `task`, `mesh` and `sft` (the demo's: `rlhf.init` empty trains the SFT policy
in `workdir/sft`), `rlhf` (rounds, advantages, clipping, KL, reward sources and transform: see
`alignment.recipes.rlhf.RLHF`) and `evaluate` (the held-out comparison with the SFT policy).
"""

import ml_collections

from alignment.recipes import config as config_lib
from alignment.recipes import rlhf


def get_config():
  return ml_collections.ConfigDict(config_lib.to_dict(rlhf.Config()))
