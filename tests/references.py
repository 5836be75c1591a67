"""Float64 numpy references and seeded inputs shared by several test files.

Each reference is written from the paper's formula with plain loops or numpy, independently of
the library code it checks. Import as `from tests import references` (the suite runs with
`python -m pytest` from the repository root).
"""

import jax.numpy as jnp
import numpy as np

GROUP_SHAPE = (3, 4, 5)  # B prompts, K completions each, T tokens per completion.


class NpRunningMoments:
  """TRL's `RunningMoments` in float64: the running mean, variance and count of BCO's rewards.

  "Binary Classifier Optimization for Large Language Model Alignment" (Jung et al., 2024). Each
  `update(xs)` merges a batch of n values (mean m, population variance v) into the state:
  `count' = count + n`, `mean' = mean + δ·n/count'`,
  `var' = (var·count + δ²·count·n/count' + v·n)/count'`, `δ = m − mean`.
  """

  def __init__(self):
    self.mean, self.var, self.count = 0.0, 1.0, 1e-24

  def update(self, xs):
    xs = np.asarray(xs, np.float64).ravel()
    n, m, v = xs.size, xs.mean(), xs.var()
    delta = m - self.mean
    tot = self.count + n
    self.var = (self.var * self.count + delta**2 * self.count * n / tot + v * n) / tot
    self.mean += delta * n / tot
    self.count = tot


def as_float32(*xs):
  """float64 numpy inputs as float32 jax arrays (integer and bool arrays keep their dtype)."""
  return [jnp.asarray(x, jnp.float32) if np.asarray(x).dtype.kind == "f" else jnp.asarray(x)
          for x in xs]


def group_inputs(seed=0):
  """Token-level inputs `[B, K, T]` (`GROUP_SHAPE`) with ragged completions and one padded one.

  Returns `(lp, old, ref, mask, where, rewards)`: policy, sampling-policy and reference token
  log-probs, the completion mask, the valid completions `[B, K]` (completion 3 of prompt 1 is
  padding) and rewards `[B, K]`.
  """
  b, k, t = GROUP_SHAPE
  rng = np.random.default_rng(seed)
  lp = -rng.uniform(0.1, 2.0, (b, k, t))
  old = lp + rng.normal(0, 0.3, (b, k, t))
  ref = lp + rng.normal(0, 0.5, (b, k, t))
  lengths = rng.integers(1, t + 1, (b, k))
  mask = np.arange(t)[None, None, :] < lengths[..., None]
  where = np.ones((b, k), bool)
  where[1, 3] = False
  rewards = rng.normal(size=(b, k))
  return lp, old, ref, mask, where, rewards


def np_grpo_advantages(r, where, scale="group", eps=1e-4):
  """GRPO advantages (Shao et al., 2024), one group at a time; NaN rewards and padding get 0."""
  r = np.asarray(r, np.float64)
  out = np.zeros_like(r)
  valid = where & ~np.isnan(r)
  batch_std = np.std(r[valid], ddof=1)
  for b in range(r.shape[0]):
    v = r[b][valid[b]]
    if v.size == 0:
      continue
    mu = v.mean()
    sd = v.std(ddof=1) if v.size > 1 else 0.0
    div = {"group": sd + eps, "batch": batch_std + eps, "none": 1.0}[scale]
    out[b][valid[b]] = (v - mu) / div
  return out


def np_rloo(r, where):
  """RLOO advantages (Ahmadian et al., 2024): each reward minus the mean of the others."""
  out = np.zeros_like(r, dtype=np.float64)
  for b in range(r.shape[0]):
    idx = np.flatnonzero(where[b])
    for i in idx:
      others = [r[b, j] for j in idx if j != i]
      if others:
        out[b, i] = r[b, i] - np.mean(others)
  return out
