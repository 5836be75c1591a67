"""Train-step factory: exact accumulation, ln 2 at step one, non-finite handling, optimisers."""

import math

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


def test_unknown_objective_lists_known_names():
  with pytest.raises(KeyError, match="Known objectives: .*dpo"):
    objective.preference_loss("not_a_loss", _toy_logp_fn)


def test_reference_free_objective_needs_no_reference():
  with pytest.raises(ValueError, match="needs a reference"):
    objective.preference_loss("dpo", _toy_logp_fn, reference="none")


def test_accum_steps_must_divide_batch():
  with pytest.raises(ValueError, match="not divisible by accum_steps=3"):
    _run_one_step("dpo", 3, _batch())


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "lion"])
def test_optimizers_from_config(name):
  cfg = type("C", (), dict(name=name, learning_rate=0.1, schedule="cosine", warmup_steps=2,
                           total_steps=10, clip_norm=1.0))()
  opt = optim.make_optimizer(cfg)
  params = {"w": jnp.ones(3)}
  updates, _ = opt.update({"w": jnp.full(3, 100.0)}, opt.init(params), params)
  assert np.all(np.isfinite(updates["w"]))


def test_schedule_warmup_then_cosine():
  cfg = type("C", (), dict(learning_rate=1.0, schedule="cosine", warmup_steps=4, total_steps=12))()
  schedule = optim.make_schedule(cfg)
  # Linear warm-up 0 -> 1 over 4 steps: 0, .25, .5, .75; then cosine from 1 to 0 over 8 steps.
  np.testing.assert_allclose([schedule(i) for i in range(4)], [0, 0.25, 0.5, 0.75], atol=1e-7)
  assert float(schedule(4)) == pytest.approx(1.0)
  assert float(schedule(8)) == pytest.approx(0.5, abs=1e-6)  # cos(pi/2) midpoint
  assert float(schedule(12)) == pytest.approx(0.0, abs=1e-7)


def test_bad_optimizer_config_is_named():
  cfg = type("C", (), dict(name="adamw", learning_rate=0.1, schedule="cosine", warmup_steps=5,
                           total_steps=5))()
  with pytest.raises(ValueError, match="total_steps"):
    optim.make_optimizer(cfg)
