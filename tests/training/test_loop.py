"""The outer loop: non-finite handling ("skip" counts, "error" stops after the last good step),
the evaluation hook and iterators whose batches depend on the policy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignment.training import objective
from alignment.training.checkpoint import Checkpointer
from alignment.training.logs import MetricWriter, read_metrics
from alignment.training.loop import NonFiniteError, train
from alignment.training.step import init_train_state, make_train_step


class _Batches:
  """A checkpointable iterator whose third batch holds a NaN feature."""

  def __init__(self):
    self.position = 0

  def __next__(self):
    rng = np.random.default_rng(self.position)
    features = rng.normal(size=(4, 2, 3)).astype(np.float32)
    if self.position == 2:
      features[0, 0, 0] = np.nan
    self.position += 1
    return {"features": features, "labels": np.tile([1.0, 0.0], (4, 1)).astype(np.float32),
            "where": np.ones((4, 2), bool)}

  def get_state(self):
    return {"position": self.position}

  def set_state(self, state):
    self.position = state["position"]


def _logp_fn(params, batch):
  logps = jnp.einsum("bkf,f->bk", batch["features"], params["w"])
  return logps, jnp.ones_like(logps)


def _setup(tmp_path, on_nonfinite):
  opt = optax.sgd(0.1)
  loss_fn = objective.preference_loss("dpo", _logp_fn, reference="forward", ref_logp_fn=_logp_fn)
  state = init_train_state({"w": jnp.ones(3)}, opt, jax.random.key(0))
  step = make_train_step(loss_fn, opt, on_nonfinite=on_nonfinite)
  ckpt = Checkpointer(str(tmp_path / "ckpt"), save_interval_steps=1, max_to_keep=5)
  return state, step, ckpt, MetricWriter(str(tmp_path), tensorboard=False)


def test_skip_counts_and_continues(tmp_path):
  state, step, ckpt, writer = _setup(tmp_path, "skip")
  state, rows = train(name="t", state=state, step_fn=step, frozen={"w": jnp.zeros(3)},
                      iterator=_Batches(), num_steps=4, checkpointer=ckpt, writer=writer,
                      log_every=1)
  assert int(state.step) == 4 and int(state.nonfinite) == 1
  assert [r["finite"] for r in rows] == [1.0, 1.0, 0.0, 1.0]
  assert read_metrics(str(tmp_path))[-1]["nonfinite_skipped"] == 1.0
  assert np.all(np.isfinite(state.params["w"]))


def test_error_stops_and_keeps_last_good_checkpoint(tmp_path):
  state, step, ckpt, writer = _setup(tmp_path, "error")
  with pytest.raises(NonFiniteError, match="step 3 .*Last good checkpoint: step 2"):
    train(name="t", state=state, step_fn=step, frozen={"w": jnp.zeros(3)},
          iterator=_Batches(), num_steps=4, checkpointer=ckpt, writer=writer, log_every=1,
          on_nonfinite="error")
  assert ckpt.steps() == [1, 2]


class _PolicyBatches(_Batches):
  """`_Batches` without NaNs that records the policy it is shown and reports its own metrics."""

  def __init__(self):
    super().__init__()
    self.seen = []

  def __next__(self):
    batch = super().__next__()
    batch["features"] = np.nan_to_num(batch["features"])
    return batch

  def update_policy(self, params):
    self.seen.append(np.asarray(params["w"]).copy())

  def metrics(self):
    return {"batches_drawn": float(self.position)}


def test_evaluation_hook_and_policy_dependent_iterator(tmp_path):
  state, step, _, writer = _setup(tmp_path, "skip")
  trajectory = [np.asarray(state.params["w"]).copy()]

  def recording_step(state, batch, frozen):
    state, metrics = step(state, batch, frozen)
    trajectory.append(np.asarray(state.params["w"]).copy())
    return state, metrics

  evaluated = []

  def eval_fn(params, frozen):
    assert frozen["w"].shape == (3,)  # the reference the step sees
    evaluated.append(np.asarray(params["w"]).copy())
    return {"w_sum": float(jnp.sum(params["w"]))}

  batches = _PolicyBatches()
  state, rows = train(name="t", state=state, step_fn=recording_step, frozen={"w": jnp.zeros(3)},
                      iterator=batches, num_steps=5, checkpointer=None, writer=writer,
                      log_every=2, eval_fn=eval_fn, eval_every=2)
  # Evaluated at step 0, every 2 steps and after the last, on the parameters of that step.
  held = [r for r in rows if "heldout/w_sum" in r]
  assert [r["step"] for r in held] == [0, 2, 4, 5]
  for row, w in zip(held, evaluated):
    np.testing.assert_allclose(w, trajectory[row["step"]], rtol=0, atol=0)
    assert row["heldout/w_sum"] == pytest.approx(float(np.sum(w)))
  # The iterator saw the current policy before each of its 5 batches.
  assert len(batches.seen) == 5
  for seen, w in zip(batches.seen, trajectory[:5]):
    np.testing.assert_array_equal(seen, w)
  logged = [r for r in rows if "loss" in r]
  assert [(r["step"], r["batches_drawn"]) for r in logged] == [(2, 2.0), (4, 4.0), (5, 5.0)]
  assert [r["step"] for r in read_metrics(str(tmp_path)) if "heldout/w_sum" in r] == [0, 2, 4, 5]


def test_a_resumed_run_does_not_evaluate_its_start_again(tmp_path):
  state, step, _, writer = _setup(tmp_path, "skip")
  state = state.replace(step=jnp.asarray(3, state.step.dtype))
  calls = []
  train(name="t", state=state, step_fn=step, frozen={"w": jnp.zeros(3)},
        iterator=_PolicyBatches(), num_steps=4, checkpointer=None, writer=writer,
        eval_fn=lambda p, f: calls.append(1) or {"x": 0.0}, eval_every=10)
  assert len(calls) == 1  # only after the last step
  with pytest.raises(ValueError, match="eval_every must be >= 0"):
    train(name="t", state=state, step_fn=step, frozen=None, iterator=_PolicyBatches(),
          num_steps=4, checkpointer=None, writer=writer, eval_every=-1)
