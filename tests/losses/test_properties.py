"""Cross-registry property tests: every objective in `alignment.losses.names()`.

Inputs come from a small factory keyed on the registry spec (family, needs_reference,
needs_lengths, extra_inputs, stateful) and on the objective's signature (a first argument named
`mse` gets non-negative values; required hyper-parameters without defaults get the values in
`REQUIRED_HYPER_PARAMETERS`). An objective whose extra input or required hyper-parameter has no
generator fails `test_factory_covers_every_objective`, naming what to add here.
"""

import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import losses
from alignment.losses.examples import (
    EXTRA_INPUTS, INPUT_NAMES, REQUIRED_HYPER_PARAMETERS, example_inputs as make_inputs)

LIPO_CONSTANT = 1.0 / math.log(2.0) - 1.0 / math.log(3.0)  # |2^1 − 2^0|·|1/ln 2 − 1/ln 3|

def _split(kwargs):
  """(array inputs, static hyper-parameters)."""
  arrays = {n: v for n, v in kwargs.items() if n not in REQUIRED_HYPER_PARAMETERS}
  static = {n: v for n, v in kwargs.items() if n in REQUIRED_HYPER_PARAMETERS}
  return arrays, static


def _loss(name, static, logps, ref_logps, labels, arrays, **options):
  out = losses.get(name)(logps, ref_logps, labels, **arrays, **static, **options)
  return out[0] if losses.spec(name).stateful else out


def _differentiable(args, arrays):
  """The float inputs a gradient is taken with respect to: logps and float extra inputs."""
  extras = {n: v for n, v in arrays.items()
            if n in EXTRA_INPUTS and jnp.issubdtype(v.dtype, jnp.floating)}
  return {"logps": args[0], **extras}


@functools.lru_cache(maxsize=None)
def _compiled(name, static_items):
  """jit(value_and_grad) of the objective w.r.t. its float inputs (one compile per objective)."""
  static = dict(static_items)

  def f(diff, ref_logps, labels, arrays):
    arrays = {**arrays, **{n: v for n, v in diff.items() if n != "logps"}}
    return _loss(name, static, diff["logps"], ref_logps, labels, arrays)

  return jax.jit(jax.value_and_grad(f))


def _run(name, args, kwargs):
  arrays, static = _split(kwargs)
  diff = _differentiable(args, arrays)
  rest = {n: v for n, v in arrays.items() if n not in diff}
  return _compiled(name, tuple(sorted(static.items())))(diff, args[1], args[2], rest)


NAMES = losses.names()
PAIRWISE = losses.names(family="pairwise")


def test_factory_covers_every_objective():
  missing = []
  for name in NAMES:
    spec = losses.spec(name)
    missing += [f"{name}: extra input {e!r}" for e in spec.extra_inputs if e not in EXTRA_INPUTS]
    for p in inspect.signature(spec.fn).parameters.values():
      if (p.kind == p.KEYWORD_ONLY and p.default is p.empty and p.name not in INPUT_NAMES
          and p.name not in EXTRA_INPUTS and p.name not in REQUIRED_HYPER_PARAMETERS):
        missing.append(f"{name}: required hyper-parameter {p.name!r}")
  assert not missing, "add generators to tests/losses/test_properties.py: " + "; ".join(missing)


@pytest.mark.parametrize("name", NAMES)
def test_jit_grad_vmap_masking_bf16_and_large_logps(name):
  args, kwargs = make_inputs(name)
  arrays, static = _split(kwargs)
  loss = lambda a, r, y, arr: _loss(name, static, a, r, y, arr)

  # jit + grad: a scalar loss with finite gradients.
  value, grads = _run(name, args, kwargs)
  assert jnp.shape(value) == () and np.isfinite(value)
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))

  # |log-probs| of 1e4: finite value and gradients.
  big_args, big_kwargs = make_inputs(name, scale=1e4)
  big_value, grads = _run(name, big_args, big_kwargs)
  assert np.isfinite(big_value), f"{name}: loss {big_value} at |logps| ~ 1e4"
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))

  # Everything masked: 0 with finite (zero) gradients.
  masked = {**kwargs, "where": jnp.zeros_like(kwargs["where"])}
  masked_value, grads = _run(name, args, masked)
  assert float(masked_value) == 0.0, f"{name}: all-masked loss {masked_value}"
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))

  # vmap over a leading axis of independent batches gives each batch's loss.
  pair = lambda x, y: None if x is None else jnp.stack([x, y])
  batched = jax.jit(jax.vmap(loss))(
      *(pair(a, b) for a, b in zip(args, big_args)),
      jax.tree_util.tree_map(pair, arrays, _split(big_kwargs)[0]))
  np.testing.assert_allclose(batched, jnp.stack([value, big_value]), rtol=1e-5)

  # bfloat16 log-probs are computed in float32: the same loss as their float32 upcast.
  lp16 = args[0].astype(jnp.bfloat16)
  ref16 = None if args[1] is None else args[1].astype(jnp.bfloat16)
  out16 = jax.jit(loss)(lp16, ref16, args[2], arrays)
  assert out16.dtype == jnp.float32, f"{name}: {out16.dtype} output for bfloat16 inputs"
  upcast = lambda x: None if x is None else x.astype(jnp.float32)
  value32, _ = _run(name, (upcast(lp16), upcast(ref16), args[2]), kwargs)
  np.testing.assert_allclose(out16, value32, rtol=1e-5)


# Pairwise objectives for which raising the chosen log-prob need not lower the loss, with why.
NOT_MONOTONE_IN_CHOSEN = {
    "apo_down": "APO-down pushes the chosen log-prob down by design; its slope at "
                "ρ = 0 is β/4 − β/4 = 0",
    "discopop": "DiscoPOP is non-monotone near h = 0: dℓ/dz = σ'(0)/τ·(1 − ln 2) − 1/4 − 1/2 "
                "= 5·0.3069 − 0.75 = +0.78 at τ = 0.05",
}


@pytest.mark.parametrize("name", PAIRWISE)
def test_raising_chosen_logp_lowers_pairwise_loss(name):
  if name in NOT_MONOTONE_IN_CHOSEN:
    pytest.skip(NOT_MONOTONE_IN_CHOSEN[name])
  args, kwargs = make_inputs(name, tie=True)
  _, grads = _run(name, args, kwargs)
  d_chosen = np.asarray(grads["logps"][..., 0])
  assert np.all(d_chosen < 0.0), f"{name}: dL/d logp_chosen = {d_chosen}"


def _pair_inputs(seed=1):
  rng = np.random.default_rng(seed)
  logps = jnp.asarray(-rng.random((5, 2)) * 30.0, jnp.float32)
  ref = jnp.asarray(-rng.random((5, 2)) * 30.0, jnp.float32)
  labels = jnp.broadcast_to(jnp.array([1.0, 0.0]), (5, 2))
  where = jnp.ones((5, 2), bool).at[3].set(False)  # one fully padded example
  return logps, ref, labels, where


@pytest.mark.parametrize("name,factor,pairwise_name", [
    ("lipo_pair_logistic", 1.0, "dpo"),
    ("lipo_listmle", 1.0, "dpo"),
    ("lipo_softmax", 1.0, "dpo"),
    ("ranklist_pairs", 1.0, "dpo"),
    ("lipo_lambda", LIPO_CONSTANT, "dpo"),
    ("lipo_pair_hinge", 1.0, "hinge"),
])
def test_k2_reduction_to_pairwise(name, factor, pairwise_name):
  logps, ref, labels, where = _pair_inputs()
  beta = 0.3
  listwise = losses.get(name)(logps, ref, labels, where=where, beta=beta)
  pairwise = losses.get(pairwise_name)(logps, ref, labels, where=where, beta=beta)
  np.testing.assert_allclose(listwise, factor * pairwise, rtol=1e-5)
  # Per-example values agree too (pair losses [..., 2, 2] hold the single pair at [0, 1]).
  unreduced = losses.get(name)(logps, ref, labels, where=where, beta=beta, reduce_fn=None)
  per_example = unreduced if unreduced.ndim == 1 else unreduced[..., 0, 1]
  np.testing.assert_allclose(
      per_example,
      factor * losses.get(pairwise_name)(logps, ref, labels, where=where, beta=beta,
                                         reduce_fn=None), rtol=1e-5, atol=1e-7)
