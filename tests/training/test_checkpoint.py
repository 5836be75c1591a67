"""Checkpoints: round trip, keep-N, incomplete and unreadable steps are skipped with a message."""

import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignment.training.checkpoint import Checkpointer
from alignment.training.step import init_train_state


def _state(value: float):
  params = {"w": jnp.full((3,), value), "b": {"c": jnp.arange(2.0)}}
  return init_train_state(params, optax.adam(1e-3), jax.random.key(7), loss_state=(jnp.ones(()),))


def test_round_trip_with_data_state(tmp_path):
  ckpt = Checkpointer(str(tmp_path), save_interval_steps=1, max_to_keep=2)
  state = _state(1.5).replace(step=jnp.array(4, jnp.int32))
  assert ckpt.save(4, state, {"epoch": 1, "position": 37})
  step, restored, data = ckpt.restore_latest(_state(0.0))
  assert step == 4 and data == {"epoch": 1, "position": 37}
  np.testing.assert_array_equal(restored.params["w"], state.params["w"])
  assert int(restored.step) == 4
  np.testing.assert_array_equal(
      jax.random.key_data(restored.rng), jax.random.key_data(state.rng)
  )


def test_keeps_newest_n(tmp_path):
  ckpt = Checkpointer(str(tmp_path), save_interval_steps=1, max_to_keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, _state(float(step)), {})
  assert ckpt.steps() == [2, 3]


def test_restore_a_given_step(tmp_path):
  ckpt = Checkpointer(str(tmp_path), save_interval_steps=1, max_to_keep=5)
  for step in (1, 2, 3):
    ckpt.save(step, _state(float(step)), {"position": 10 * step})
  state, data = ckpt.restore(2, _state(0.0))
  np.testing.assert_array_equal(state.params["w"], np.full((3,), 2.0))
  assert data == {"position": 20}
  with pytest.raises(FileNotFoundError, match=r"step 7 .*\[1, 2, 3\]"):
    ckpt.restore(7, _state(0.0))


def test_interval(tmp_path):
  ckpt = Checkpointer(str(tmp_path), save_interval_steps=5, max_to_keep=5)
  written = [ckpt.save(step, _state(0.0), {}) for step in range(1, 11)]
  assert ckpt.steps() == [5, 10]
  assert sum(written) == 2


def test_incomplete_newest_step_is_ignored(tmp_path, caplog):
  ckpt = Checkpointer(str(tmp_path), save_interval_steps=1, max_to_keep=3)
  ckpt.save(1, _state(1.0), {"position": 1})
  # A hard kill during the write of step 2 leaves only Orbax's temporary directory behind.
  os.makedirs(tmp_path / "2.orbax-checkpoint-tmp-1234")
  ckpt = Checkpointer(str(tmp_path), save_interval_steps=1, max_to_keep=3)
  with caplog.at_level(logging.WARNING):
    step, restored, data = ckpt.restore_latest(_state(0.0))
  assert step == 1 and data == {"position": 1}
  np.testing.assert_array_equal(restored.params["w"], np.full(3, 1.0))


def test_unreadable_newest_step_falls_back(tmp_path, caplog):
  ckpt = Checkpointer(str(tmp_path), save_interval_steps=1, max_to_keep=3)
  ckpt.save(1, _state(1.0), {"position": 1})
  ckpt.save(2, _state(2.0), {"position": 2})
  shutil.rmtree(tmp_path / "2" / "state")  # corrupt the newest step
  ckpt = Checkpointer(str(tmp_path), save_interval_steps=1, max_to_keep=3)
  with caplog.at_level(logging.WARNING):
    step, restored, _ = ckpt.restore_latest(_state(0.0))
  assert step == 1
  assert "could not be read" in caplog.text
  np.testing.assert_array_equal(restored.params["w"], np.full(3, 1.0))


def test_empty_directory_restores_nothing(tmp_path):
  assert Checkpointer(str(tmp_path)).restore_latest(_state(0.0)) is None
