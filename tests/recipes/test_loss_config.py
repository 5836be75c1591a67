"""Every objective's hyper-parameters from the config and the command line, checked up front."""

import os
import subprocess
import sys

import pytest

from alignment.losses import registry
from alignment.recipes import config as config_lib
from alignment.recipes import preference_training
from experiments import _flags
from experiments.configs import demo as demo_configs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_loss_section_has_every_hyper_parameter_unset():
  section = demo_configs.get_config().loss.to_dict()
  assert set(section) == {"name", *registry.hyper_parameter_names()}
  assert section["name"] == "lipo_lambda" and section["beta"] == 0.5
  assert all(v is None for k, v in section.items() if k not in ("name", "beta"))


def test_set_hyper_parameters_reach_the_typed_config_and_unset_ones_are_dropped():
  config = demo_configs.get_config()
  config.loss.name = "robust"  # TRL's name of rdpo
  config.loss.label_smoothing = 0.2
  config.loss.beta = None  # unset: the objective's default
  loss = _flags.typed(preference_training.Config, config).loss
  assert loss == config_lib.Loss("robust", {"label_smoothing": 0.2})
  assert config_lib.to_dict(loss) == {"name": "robust", "label_smoothing": 0.2}


def test_a_hyper_parameter_the_objective_does_not_take_is_an_error_naming_it():
  config = demo_configs.get_config()
  config.loss.name = "dpo"
  config.loss.gamma = 1.0
  with pytest.raises(ValueError, match=r"'dpo' takes no hyper-parameter\(s\) \['gamma'\]; its "
                     r"hyper-parameters: beta=0.1, label_smoothing=0.0, fdiv='reverse_kl'"):
    _flags.typed(preference_training.Config, config)
  with pytest.raises(ValueError, match="'gamma'"):  # built in Python: the same check
    config_lib.Loss("dpo", {"gamma": 1.0})
  with pytest.raises(TypeError, match="label_smoothing='abc' must be a number"):
    config_lib.from_dict(config_lib.Loss, {"name": "dpo", "label_smoothing": "abc"})
  with pytest.raises(KeyError, match="Unknown objective 'dpoo'. Did you mean 'dpo'"):
    config_lib.from_dict(config_lib.Loss, {"name": "dpoo"})


def _train(tmp_path, *flags):
  """`experiments.train` on missing inputs: it fails at the config check, or on the files."""
  return subprocess.run(
      [sys.executable, "-m", "experiments.train", f"--workdir={tmp_path / 'work'}",
       f"--config.train.init={tmp_path / 'no_sft'}", f"--config.train.data={tmp_path / 'no.jsonl'}",
       "--config.loss.name=dpo", *flags],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_the_binary_takes_any_hyper_parameter_and_refuses_bad_ones_before_training(tmp_path):
  accepted = _train(tmp_path, "--config.loss.label_smoothing=0.1", "--config.loss.fdiv=forward_kl")
  assert accepted.returncode != 0
  assert "No parameter file at" in accepted.stderr, accepted.stderr[-3000:]  # past the config

  bad_value = _train(tmp_path, "--config.loss.label_smoothing=abc")
  assert "TypeError: Objective 'dpo': hyper-parameter label_smoothing='abc' must be a number" \
      in bad_value.stderr, bad_value.stderr[-3000:]
  bad_name = _train(tmp_path, "--config.loss.label_smoothing=0.1", "--config.loss.tau=0.5")
  assert ("ValueError: Objective 'dpo' takes no hyper-parameter(s) ['tau']; its "
          "hyper-parameters: beta=0.1, label_smoothing=0.0, fdiv='reverse_kl'"
          in bad_name.stderr), bad_name.stderr[-3000:]
  for proc in (bad_value, bad_name):
    assert "No parameter file" not in proc.stderr  # refused before reading any input
