"""The outer loop: non-finite handling ("skip" counts, "error" stops after the last good step)."""

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
