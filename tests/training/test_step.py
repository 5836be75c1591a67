"""Train-step factory: exact accumulation, ln 2 at step one, non-finite handling, clipping."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignment.training import objective, optim
from alignment.training.step import init_train_state, make_train_step


def _toy_logp_fn(params, batch):
  """A log-linear 'policy': logps = features @ w, counts = 1 (stands in for a model)."""
  logps = jnp.einsum("bkf,f->bk", batch["features"], params["w"]) - 3.0
  return logps, jnp.ones_like(logps)


def _batch(n=16, k=2, f=5, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.tile(np.arange(k, 0, -1, dtype=np.float32), (n, 1))
  return {
      "features": rng.normal(size=(n, k, f)).astype(np.float32),
      "labels": labels,
      "where": np.ones((n, k), bool),
      "response_lengths": np.full((n, k), 4, np.int32),
  }


def _run_one_step(loss_name, accum_steps, batch, reference="forward"):
  params = {"w": jnp.linspace(-0.3, 0.4, 5)}
  loss_fn = objective.preference_loss(
      loss_name, _toy_logp_fn, reference=reference, hyper_parameters={"beta": 0.5},
      ref_logp_fn=_toy_logp_fn,
  )
  opt = optax.sgd(0.1)
  state = init_train_state(params, opt, jax.random.key(0))
  step = make_train_step(loss_fn, opt, accum_steps=accum_steps, donate=False)
  ref_params = {"w": jnp.zeros(5)}
  return step(state, batch, ref_params)


def test_gradient_accumulation_is_exact():
  batch = _batch()
  one_state, one_metrics = _run_one_step("dpo", 1, batch)
  acc_state, acc_metrics = _run_one_step("dpo", 4, batch)
  np.testing.assert_allclose(acc_state.params["w"], one_state.params["w"], atol=1e-6, rtol=0)
  np.testing.assert_allclose(acc_metrics["loss"], one_metrics["loss"], atol=1e-6, rtol=0)
  assert float(acc_metrics["count"]) == 16.0


def test_listwise_accumulation_is_exact():
  batch = _batch(k=4)
  one_state, _ = _run_one_step("lipo_lambda", 1, batch)
  acc_state, _ = _run_one_step("lipo_lambda", 4, batch)
  np.testing.assert_allclose(acc_state.params["w"], one_state.params["w"], atol=1e-6, rtol=0)


def test_dpo_step_one_is_ln2_when_policy_equals_reference():
  params = {"w": jnp.linspace(-0.3, 0.4, 5)}
  loss_fn = objective.preference_loss(
      "dpo", _toy_logp_fn, reference="forward", ref_logp_fn=_toy_logp_fn
  )
  opt = optax.sgd(0.1)
  state = init_train_state(params, opt, jax.random.key(0))
  _, metrics = make_train_step(loss_fn, opt, donate=False)(state, _batch(), params)
  assert float(metrics["loss"]) == pytest.approx(math.log(2.0), abs=1e-6)


def test_nonfinite_update_is_skipped_and_counted():
  batch = _batch()
  batch["features"][3, 0, 0] = np.nan
  state, metrics = _run_one_step("dpo", 1, batch)
  assert float(metrics["finite"]) == 0.0
  assert int(state.nonfinite) == 1
  np.testing.assert_array_equal(state.params["w"], jnp.linspace(-0.3, 0.4, 5))
  assert int(state.step) == 1


def test_step_applies_the_configured_clipping():
  # Features scaled by 100 make the DPO gradient norm far larger than clip_norm = 1, so SGD with
  # learning rate 0.1 moves the parameters by exactly 0.1 along the negative mean gradient.
  batch = _batch()
  batch["features"] = batch["features"] * 100.0
  params, ref_params = {"w": jnp.linspace(-0.3, 0.4, 5)}, {"w": jnp.zeros(5)}
  loss_fn = objective.preference_loss(
      "dpo", _toy_logp_fn, reference="forward", hyper_parameters={"beta": 0.5},
      ref_logp_fn=_toy_logp_fn,
  )
  opt = optim.make_optimizer(types.SimpleNamespace(name="sgd", learning_rate=0.1, clip_norm=1.0))
  state = init_train_state(params, opt, jax.random.key(0))
  new_state, metrics = make_train_step(loss_fn, opt, donate=False)(state, batch, ref_params)

  def mean_loss(p):
    (total, count), _ = loss_fn(p, batch, (), ref_params, None)
    return total / count

  grad = jax.grad(mean_loss)(params)["w"]
  assert float(metrics["grad_norm"]) == pytest.approx(float(jnp.linalg.norm(grad)), rel=1e-5)
  assert float(metrics["grad_norm"]) > 10.0
  np.testing.assert_allclose(new_state.params["w"] - params["w"],
                             -0.1 * grad / jnp.linalg.norm(grad), rtol=1e-4, atol=1e-7)


def test_accum_steps_must_divide_batch():
  with pytest.raises(ValueError, match="not divisible by accum_steps=3"):
    _run_one_step("dpo", 3, _batch())
