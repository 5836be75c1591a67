"""Run builders: static batch shapes, fixed batches, global batches, and `train_run` (the one loop
with its files: parameters, memory report, metrics with held-out rows)."""

import json
import os

import jax
import numpy as np
import pytest

from alignment.recipes.config import Model, Optimizer, Task, task_and_model
from alignment.training import logs, objective, runs, setup

TASK, MODEL_CONFIG = task_and_model(Task(), Model(overrides={"width": 32, "depth": 1,
                                                            "mlp_dim": 64, "dtype": "float32"}))


ENCODING = runs.task_encoding(TASK)


def _records(n):
  return [{"prompt": p, "responses": [r], "scores": [1.0]}
          for p, r in TASK.demonstrations(n, seed=0)]


def test_task_encoding_fits_the_task_with_bos_and_eos():
  config = ENCODING.batch_config(list_size=3)
  assert config.max_prompt_tokens == TASK.max_prompt_length + 1
  assert config.max_response_tokens == TASK.max_response_length + 1
  assert config.list_size == 3


def test_fixed_batches_pad_the_last_batch_by_repeating_its_last_record():
  records = _records(5)
  batches = runs.fixed_batches(records, ENCODING, batch_size=2, list_size=1)
  assert len(batches) == 3
  np.testing.assert_array_equal(batches[2]["tokens"][0], batches[2]["tokens"][1])
  single = runs.fixed_batches(records[4:], ENCODING, batch_size=1, list_size=1)[0]
  np.testing.assert_array_equal(batches[2]["tokens"][:1], single["tokens"])


def test_batches_are_the_global_batch_and_resume_from_their_state():
  iterator = runs.batches(_records(32), ENCODING, batch_size=8, list_size=1, seed=3)
  first = next(iterator)
  assert first["tokens"].shape[:2] == (8, 1)
  state = iterator.get_state()
  second = next(iterator)
  again = runs.batches(_records(32), ENCODING, batch_size=8, list_size=1, seed=3)
  again.set_state(state)
  np.testing.assert_array_equal(next(again)["tokens"], second["tokens"])


def test_train_run_writes_params_memory_report_and_heldout_rows(tmp_path):
  logp_fn = setup.logp_fn(MODEL_CONFIG, chunk_size=16)
  params = runs.init_model(MODEL_CONFIG, 0)
  fixed = runs.fixed_batches(_records(8), ENCODING, batch_size=8, list_size=1)[0]
  heldout_nll = lambda p, _=None: {"nll": float(-np.sum(np.asarray(jax.jit(logp_fn)(p, fixed)[0])))}
  workdir = str(tmp_path)
  state, rows = runs.train_run(
      name="t", workdir=workdir, loss_fn=objective.sft_loss(logp_fn), params=params,
      optimizer_config=Optimizer(learning_rate=1e-2), seed=0, num_steps=4,
      iterator=runs.batches(_records(32), ENCODING, batch_size=8, list_size=1, seed=0),
      log_every=2, checkpoint_every=2, model_config=MODEL_CONFIG,
      eval_fn=heldout_nll, eval_every=2)
  # The exported parameters are the final ones.
  saved = setup.load_params(params, workdir)
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with open(os.path.join(workdir, runs.MEMORY_FILE), encoding="utf-8") as f:
    memory = json.load(f)
  assert memory["devices"] == jax.device_count() and memory["per_device"]["temp_bytes"] > 0
  held = [r for r in logs.read_metrics(workdir) if "heldout/nll" in r]
  assert [r["step"] for r in held] == [0, 2, 4]
  assert held[-1]["heldout/nll"] == pytest.approx(heldout_nll(state.params)["nll"], rel=1e-6)
  assert held[-1]["heldout/nll"] < held[0]["heldout/nll"]  # SFT lowers the NLL of its data
  assert [r["step"] for r in rows if "loss" in r] == [2, 4]


class _Ones:
  """A checkpointable iterator of constant batches."""

  def __next__(self):
    return {"x": np.ones(3, np.float32)}

  def get_state(self):
    return {}

  def set_state(self, state):
    del state


def test_a_frozen_tree_given_as_the_initial_parameters_is_not_donated(tmp_path):
  """The step donates the state: a reference that is the very arrays of the initial parameters
  (a checkpoint already on device) is copied, so it stays the initial values."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  params = {"w": jnp.full(3, 2.0)}

  def loss_fn(params, batch, loss_state, frozen, rng):
    del rng
    # 0.5·|w − w_ref − x|², gradient w − w_ref − x: from w = w_ref it is −x at every step
    # while w_ref stays 2 (one SGD step of 0.5 moves w by +0.5 per step, ...).
    d = params["w"] - frozen["w"] - batch["x"]
    return (0.5 * jnp.sum(d * d), jnp.float32(1.0)), (loss_state, {})

  state, _ = runs.train_run(
      name="t", workdir=str(tmp_path), loss_fn=loss_fn, params=params, frozen=params,
      optimizer_config=Optimizer(name="sgd", learning_rate=0.5, clip_norm=0.0), seed=0,
      num_steps=2, iterator=_Ones(), log_every=1)
  # w: 2 -> 2.5 (grad −1) -> 2.75 (grad 2.5 − 2 − 1 = −0.5): the reference stayed 2.
  np.testing.assert_allclose(np.asarray(state.params["w"]), 2.75, rtol=1e-6)
