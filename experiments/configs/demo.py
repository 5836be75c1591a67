"""Default config of the main job (`experiments/demo.py`) and of the binaries it chains.

The defaults are those of `alignment.recipes.demo.Config`; every binary reads the sections its
recipe needs: `model`, `task`, `mesh` (all), `sft` (sft.py), `preferences`
(make_preferences.py), `loss` + `train` (train.py), `evaluate` (evaluate.py). Override any field
on the command line, e.g. `--config.loss.name=dpo --config.train.num_steps=50`; `loss` takes the
objective's keyword hyper-parameters next to `name` (`--config.loss.beta=0.1`), `model` any
`ModelConfig` field next to `preset` and `logprob_chunk`.
"""

import ml_collections

from alignment.recipes import config as config_lib
from alignment.recipes import demo


def optimizer(learning_rate: float, total_steps: int, warmup_steps: int = 0):
  """AdamW (b2 = 0.99, clipping at norm 1) with a warm-up, then cosine decay to `total_steps`."""
  return ml_collections.ConfigDict(config_lib.to_dict(config_lib.Optimizer(
      learning_rate=learning_rate, total_steps=total_steps, warmup_steps=warmup_steps,
      schedule="cosine" if total_steps > warmup_steps else "constant", b2=0.99)))


def get_config():
  return ml_collections.ConfigDict(config_lib.to_dict(demo.Config()))
