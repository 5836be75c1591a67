"""Typed recipe configs: building from mappings, errors that name the field, round trips."""

import dataclasses

import jax.numpy as jnp
import pytest

from alignment.models import config as model_config
from alignment.recipes import config as config_lib
from alignment.recipes import demo, preference_training, sft
from experiments import _flags
from experiments.configs import demo as demo_configs


def test_the_binaries_config_file_equals_the_recipe_defaults():
  assert _flags.typed(demo.Config, demo_configs.get_config()) == demo.Config()


def test_to_dict_and_from_dict_round_trip():
  config = config_lib.replace_in(demo.Config(), "train", num_steps=7)
  config = dataclasses.replace(config, loss=config_lib.Loss("dpo", {"beta": 0.2}))
  plain = config_lib.to_dict(config)
  assert plain["loss"] == {"name": "dpo", "beta": 0.2}  # hyper-parameters beside the name
  assert plain["model"]["width"] == 64 and plain["model"]["preset"] == "tiny"
  assert config_lib.from_dict(demo.Config, plain) == config


def test_unknown_fields_are_named_with_their_path():
  with pytest.raises(ValueError, match=r"config\.train\.optimizer\.lr'\]; known: .*learning_rate"):
    config_lib.from_dict(demo.Config, {"train": {"optimizer": {"lr": 1.0}}})
  with pytest.raises(ValueError, match=r"config\.model\.widht"):
    config_lib.from_dict(demo.Config, {"model": {"widht": 8}})
  with pytest.raises(TypeError, match=r"config\.sft must be a mapping"):
    config_lib.from_dict(demo.Config, {"sft": 3})
  # Top-level sections a recipe does not read are ignored: one file feeds several recipes.
  assert config_lib.from_dict(sft.Config, {"train": {"num_steps": 3}}) == sft.Config()


def test_values_are_converted_to_the_annotated_types():
  config = config_lib.from_dict(preference_training.Config, {
      "train": {"lora": {"rank": 2, "targets": ["q", "v"]}, "optimizer": {"learning_rate": 1}}})
  assert config.train.lora.targets == ("q", "v")
  assert isinstance(config.train.optimizer.learning_rate, float)


def test_model_build_equals_the_preset_with_overrides():
  model = config_lib.from_dict(config_lib.Model, {"preset": "tiny", "width": 32,
                                                  "dtype": "float32", "logprob_chunk": 8})
  assert model.logprob_chunk == 8
  expected = model_config.get_config("tiny", width=32, dtype=jnp.float32, vocab_size=50)
  assert model.build(vocab_size=50) == expected


def test_select_takes_the_same_named_sections_and_replace_in_one_field():
  config = config_lib.replace_in(demo.Config(seed=3), "sft", num_steps=5)
  stage = config_lib.select(sft.Config, config)
  assert stage == sft.Config(seed=3, sft=dataclasses.replace(sft.SFT(), num_steps=5))
  assert config.train == demo.Config().train  # other sections untouched
