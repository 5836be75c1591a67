"""Config of `experiments/align.py`: align a local Hugging Face checkpoint on a preference file.

The defaults are those of `alignment.recipes.align.Config` (TRL's DPO defaults: β 0.1, batch 8,
AdamW at 1e-6 with a linear decay, one epoch). Sections: `model` (`path`, dtypes, chat
template), `loss` (name and any hyper-parameter of the objective), `train` (data file, layout,
pairing rule, steps or epochs, LoRA, reference mode, checkpoints), `lengths` (TRL's
`max_prompt_length`, `max_completion_length`, `max_length`), `mesh`.
"""

import ml_collections

from alignment.recipes import align
from alignment.recipes import config as config_lib
from experiments.configs import demo


def get_config():
  config = ml_collections.ConfigDict(config_lib.to_dict(align.Config()))
  config.loss = demo.loss(align.Config().loss)
  return config
