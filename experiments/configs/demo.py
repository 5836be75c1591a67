"""Default config of the main job (`experiments/demo.py`) and of the binaries it chains.

The defaults are those of `alignment.recipes.demo.Config`; every binary reads the sections its
recipe needs: `model`, `task`, `mesh` (all), `sft` (sft.py), `preferences`
(make_preferences.py), `loss` + `train` (train.py), `evaluate` (evaluate.py). Override any field
on the command line, e.g. `--config.loss.name=dpo --config.train.num_steps=50`; `loss` takes any
objective's keyword hyper-parameters next to `name` (`--config.loss.label_smoothing=0.1`, see
`docs/objectives.md`; `--config.loss.beta=None` unsets one), `model` any `ModelConfig` field next
to `preset` and `logprob_chunk`.
"""

import ml_collections

from alignment.losses import registry
from alignment.recipes import config as config_lib
from alignment.recipes import demo


def optimizer(learning_rate: float, total_steps: int, warmup_steps: int = 0):
  """AdamW (b2 = 0.99, clipping at norm 1) with a warm-up, then cosine decay to `total_steps`."""
  return ml_collections.ConfigDict(config_lib.to_dict(config_lib.Optimizer(
      learning_rate=learning_rate, total_steps=total_steps, warmup_steps=warmup_steps,
      schedule="cosine" if total_steps > warmup_steps else "constant", b2=0.99)))


def loss(section: config_lib.Loss) -> ml_collections.ConfigDict:
  """The `loss` section: `name` and every hyper-parameter name of the registry.

  Hyper-parameters are untyped fields (the command line parses a Python literal, else a string:
  `0.1`, `True`, `None`, `forward_kl`); those left None are unset, so the objective's defaults
  apply, and one the chosen objective does not take is an error when the typed config is built.
  """
  values = dict(section.hyper_parameters)
  out = ml_collections.ConfigDict({"name": section.name})
  for key in registry.hyper_parameter_names():
    out[key] = ml_collections.FieldReference(values.get(key), field_type=object)
  return out


def get_config():
  config = ml_collections.ConfigDict(config_lib.to_dict(demo.Config()))
  config.loss = loss(demo.Config().loss)
  return config
