"""optax optimisers and schedules from config: clipping, hand-worked first updates, the chain.

The built optimiser is compared with the optax chain written out by hand from the same fields
(global-norm clipping, then the named optimiser over a warm-up + decay schedule written as a plain
Python function), over several steps with changing gradients.
"""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignment.training import optim


def _cfg(**fields):
  return types.SimpleNamespace(**fields)


def _updates(opt, grads, params):
  """The update of each step for a sequence of gradients (parameters moved by each update)."""
  state, out = opt.init(params), []
  for g in grads:
    update, state = opt.update(g, state, params)
    params = optax.apply_updates(params, update)
    out.append(update)
  return out


def test_clipping_gives_a_huge_gradient_the_norm_of_the_clipped_one():
  # SGD, lr 0.1, clip 1: a gradient of norm 1e4 is rescaled to norm 1, so the update has norm 0.1;
  # g = (3, 4) (norm 5) becomes (0.6, 0.8) and the update −0.1·(0.6, 0.8) = (−0.06, −0.08).
  opt = optim.make_optimizer(_cfg(name="sgd", learning_rate=0.1, clip_norm=1.0))
  params = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
  huge = {"a": jnp.array([6e3, 8e3]), "b": jnp.zeros(3)}
  (update,) = _updates(opt, [huge], params)
  assert float(optax.global_norm(update)) == pytest.approx(0.1, rel=1e-6)
  (update,) = _updates(opt, [{"a": jnp.array([3.0, 4.0]), "b": jnp.zeros(3)}], params)
  np.testing.assert_allclose(update["a"], [-0.06, -0.08], rtol=1e-6)
  # Below the threshold nothing is clipped: norm 0.5 -> update −0.1·g.
  (update,) = _updates(opt, [{"a": jnp.array([0.3, 0.4]), "b": jnp.zeros(3)}], params)
  np.testing.assert_allclose(update["a"], [-0.03, -0.04], rtol=1e-6)


@pytest.mark.parametrize("clip_norm", [None, 0.0])
def test_no_clipping_when_clip_norm_is_off(clip_norm):
  opt = optim.make_optimizer(_cfg(name="sgd", learning_rate=0.1, clip_norm=clip_norm))
  (update,) = _updates(opt, [{"w": jnp.array([3.0, 4.0])}], {"w": jnp.zeros(2)})
  np.testing.assert_allclose(update["w"], [-0.3, -0.4], rtol=1e-6)


@pytest.mark.parametrize("name, want", [
    # Step one of the Adam family: bias-corrected m/√v = g/|g| = sign(g) (eps negligible);
    # p = (1, −2), g = (3, −4), lr 0.1, weight decay 0.5 (decoupled: −lr·wd·p).
    ("adam", [-0.1, 0.1]),                  # −0.1·sign(g); no weight decay
    ("adamw", [-0.15, 0.2]),                # −0.1·(sign(g) + 0.5·p) = −0.1·((1, −1) + (0.5, −1))
    ("lion", [-0.15, 0.2]),                 # −0.1·(sign((1 − b1)·g) + 0.5·p): the same
    ("sgd", [-0.3, 0.4]),                   # −0.1·g
])
def test_first_update_by_hand(name, want):
  opt = optim.make_optimizer(_cfg(name=name, learning_rate=0.1, weight_decay=0.5))
  (update,) = _updates(opt, [{"w": jnp.array([3.0, -4.0])}], {"w": jnp.array([1.0, -2.0])})
  np.testing.assert_allclose(update["w"], want, rtol=1e-5)


def _warmup_cosine(lr, warmup, total):
  def schedule(step):
    step = float(step)
    if step < warmup:
      return lr * step / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) /
                                    (total - warmup)))
  return schedule


_FIELDS = dict(learning_rate=0.05, schedule="cosine", warmup_steps=2, total_steps=6,
               clip_norm=0.7, weight_decay=0.1, b1=0.8, b2=0.95, eps=1e-3, momentum=0.5)


@pytest.mark.parametrize("name, hand_built", [
    ("adamw", lambda s: optax.adamw(s, b1=0.8, b2=0.95, eps=1e-3, weight_decay=0.1)),
    ("adam", lambda s: optax.adam(s, b1=0.8, b2=0.95, eps=1e-3)),
    ("lion", lambda s: optax.lion(s, b1=0.8, b2=0.95, weight_decay=0.1)),
    ("sgd", lambda s: optax.sgd(s, momentum=0.5)),
])
def test_built_optimizer_is_the_configured_chain(name, hand_built):
  opt = optim.make_optimizer(_cfg(name=name, **_FIELDS))
  reference = optax.chain(optax.clip_by_global_norm(0.7),
                          hand_built(_warmup_cosine(0.05, warmup=2, total=6)))
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "b": jnp.ones(2)}
  grads = [jax.tree.map(lambda p, s=s: jnp.asarray(rng.normal(size=p.shape) * s, jnp.float32),
                        params) for s in (0.1, 3.0, 0.5, 10.0, 1.0, 0.2)]
  got, want = _updates(opt, grads, params), _updates(reference, grads, params)
  for step, (a, b) in enumerate(zip(got, want)):
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(leaf_a, leaf_b, rtol=1e-5, atol=1e-8, err_msg=f"step {step}")
  assert float(optax.global_norm(got[0])) == 0.0  # warm-up starts at learning rate 0


def test_schedule_warmup_then_cosine():
  cfg = _cfg(learning_rate=1.0, schedule="cosine", warmup_steps=4, total_steps=12)
  schedule = optim.make_schedule(cfg)
  # Linear warm-up 0 -> 1 over 4 steps: 0, .25, .5, .75; then cosine from 1 to 0 over 8 steps.
  np.testing.assert_allclose([schedule(i) for i in range(4)], [0, 0.25, 0.5, 0.75], atol=1e-7)
  assert float(schedule(4)) == pytest.approx(1.0)
  assert float(schedule(8)) == pytest.approx(0.5, abs=1e-6)  # cos(pi/2) midpoint
  assert float(schedule(12)) == pytest.approx(0.0, abs=1e-7)


def test_schedule_warmup_then_linear_or_constant():
  # lr 2, warm-up 2 steps: 0, 1, then linear 2 -> 0 over 4 steps: 2, 1.5, 1, 0.5, 0.
  linear = optim.make_schedule(_cfg(learning_rate=2.0, schedule="linear", warmup_steps=2,
                                    total_steps=6))
  np.testing.assert_allclose([linear(i) for i in range(7)], [0, 1, 2, 1.5, 1, 0.5, 0], atol=1e-6)
  constant = optim.make_schedule(_cfg(learning_rate=2.0, schedule="constant", warmup_steps=2))
  np.testing.assert_allclose([constant(i) for i in range(5)], [0, 1, 2, 2, 2], atol=1e-6)
  no_warmup = optim.make_schedule(_cfg(learning_rate=2.0))
  np.testing.assert_allclose([no_warmup(i) for i in (0, 100)], [2, 2])


@pytest.mark.parametrize("fields, match", [
    (dict(name="adamw", learning_rate=0.1, schedule="cosine", warmup_steps=5, total_steps=5),
     "total_steps"),
    (dict(name="adagrad", learning_rate=0.1), "optimizer.name"),
    (dict(name="sgd", learning_rate=0.1, schedule="step"), "optimizer.schedule"),
    (dict(name="sgd", learning_rate=0.0), "learning_rate must be > 0"),
    (dict(name="sgd", learning_rate=0.1, warmup_steps=-1), "warmup_steps must be >= 0"),
    (dict(name="sgd", learning_rate=0.1, clip_norm=-1.0), "clip_norm must be >= 0"),
])
def test_bad_optimizer_config_is_named(fields, match):
  with pytest.raises(ValueError, match=match):
    optim.make_optimizer(_cfg(**fields))
