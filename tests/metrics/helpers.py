"""Helpers shared by the metrics tests: jitted calls, seeded ragged lists, tree comparison."""

import functools

import jax
import numpy as np

from alignment import metrics as M

ATOL = 1e-5


def _is_static(value):
  return value is None or isinstance(value, (bool, int, float, str, tuple))


@functools.lru_cache(maxsize=None)
def _compiled(fn, static_items):
  return jax.jit(functools.partial(fn, **dict(static_items)))


def run(fn, *args, **kwargs):
  """Calls a metric under `jit` with its hyper-parameters static.

  One XLA compilation per shape is several times cheaper on CPU than op-by-op dispatch of
  eager mode, which keeps these tests fast; `test_jit_matches_eager` covers eager mode.
  """
  static = tuple(sorted((k, v) for k, v in kwargs.items() if _is_static(v)))
  dynamic = {k: v for k, v in kwargs.items() if not _is_static(v)}
  return _compiled(fn, static)(*args, **dynamic)


def mean_of(sc):
  """The mean of a `SumCount` as a Python float."""
  return float(M.mean(sc))


def random_lists(seed, shape=(6, 4), num_labels=3):
  """Float32 log-probs, integer labels (with ties), lengths and a mask with ragged lists."""
  rng = np.random.default_rng(seed)
  logps = rng.normal(-5.0, 2.0, shape).astype(np.float32)
  ref = (logps + rng.normal(0.0, 1.0, shape)).astype(np.float32)
  labels = rng.integers(0, num_labels, shape).astype(np.float32)
  lengths = rng.integers(1, 9, shape).astype(np.int32)
  where = rng.random(shape) < 0.8
  where[..., :1] = True
  return logps, ref, labels, lengths, where


def assert_trees_close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5), a, b)
