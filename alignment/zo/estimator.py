"""Rank-based gradient estimator of ZO-RankSGD.

Paper: *Zeroth-Order Optimization Meets Human Feedback: Provable Learning via Ranking Oracles*
(Tang, Rybin, Chang; ICLR 2024).

Sample `ξ_1..ξ_m ~ N(0, I)`, query an (m, k)-ranking oracle on `x + μ·ξ_i` and average the
perturbation differences over the pairs S the ranking reveals (i better than j):

    g = (1/|S|) · Σ_{(i, j) ∈ S} (ξ_j − ξ_i),     |S| = k(k−1)/2 + k(m−k),

which points towards increasing f. In closed form `g = (1/|S|) Σ_i c_i ξ_i` with
`c = 2r − m + 1` for the candidate returned at 0-based position r and `c = +k` for each of the
m − k unreturned candidates (times worse minus times better); `Σ_i c_i = 0`.

Parameters and perturbations are arbitrary pytrees: the perturbations of m candidates are a
pytree of the same structure whose leaves have a leading axis of size m.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from alignment.zo.oracles import Oracle

PyTree = Any

PERTURBATIONS = ("gaussian", "sphere")


def num_pairs(m: int, k: int) -> int:
  """`|S| = k(k−1)/2 + k(m−k)`: pairs revealed by an (m, k)-ranking."""
  _check_mk(m, k, "num_pairs")
  return k * (k - 1) // 2 + k * (m - k)


def _check_mk(m, k, where: str) -> None:
  for name, value in (("m", m), ("k", k)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise TypeError(f"{where}: {name} must be a Python int, got {value!r}.")
  if m < 2:
    raise ValueError(f"{where}: m={m} must be >= 2 (a ranking of one candidate says nothing).")
  if not 1 <= k <= m:
    raise ValueError(f"{where}: k={k} is out of range [1, m={m}].")


def check_m_mu(m, mu, where: str) -> None:
  """Readable errors for the number of queries m (int >= 2) and the radius μ (> 0)."""
  if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 2:
    raise ValueError(f"{where}: m must be an int >= 2, got {m!r}.")
  if not mu > 0:
    raise ValueError(f"{where}: mu must be > 0, got {mu}.")


def _check_ranking(ranking: jax.Array, m: int, where: str) -> int:
  """Validates shape (always) and values (when concrete); returns k."""
  if ranking.ndim != 1:
    raise ValueError(f"{where}: ranking must be [k], got shape {ranking.shape}.")
  k = ranking.shape[0]
  _check_mk(m, k, where)
  if not isinstance(ranking, jax.core.Tracer):
    ids = np.asarray(ranking)
    if ids.min() < 0 or ids.max() >= m or len(set(ids.tolist())) != k:
      raise ValueError(f"{where}: ranking must hold {k} distinct ids in [0, {m}), got {ids}.")
  return k


def _positions(ranking: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
  """`(returned [m] bool, position [m] int32)`; position is meaningful where returned."""
  k = ranking.shape[0]
  position = jnp.zeros((m,), jnp.int32).at[ranking].set(jnp.arange(k, dtype=jnp.int32))
  returned = jnp.zeros((m,), bool).at[ranking].set(True)
  return returned, position


def pair_dag(ranking: jax.Array, m: int, k: int | None = None) -> jax.Array:
  """The pairs S (better, worse) revealed by an (m, k)-ranking, as int32 `[|S|, 2]`.

  Order: first the k(k−1)/2 pairs inside the top-k (`(ranking[r], ranking[s])`, r < s, row-major),
  then every returned candidate (in ranked order) against every unreturned one (in increasing id).

  Args:
    ranking: int32 `[k]`, distinct ids in `[0, m)`, best first.
    m: number of candidates.
    k: optional; if given it must equal `len(ranking)`.
  """
  ranking = jnp.asarray(ranking, jnp.int32)
  got_k = _check_ranking(ranking, m, "pair_dag")
  if k is not None and k != got_k:
    raise ValueError(f"pair_dag: k={k} but the ranking has {got_k} entries.")
  k = got_k
  better_r, worse_r = np.triu_indices(k, 1)
  inner = jnp.stack([ranking[better_r], ranking[worse_r]], axis=-1)
  returned, _ = _positions(ranking, m)
  unreturned = jnp.argsort(returned, stable=True)[: m - k].astype(jnp.int32)
  cross = jnp.stack(
      [jnp.repeat(ranking, m - k), jnp.tile(unreturned, k)], axis=-1
  ).reshape(k * (m - k), 2)
  return jnp.concatenate([inner, cross], axis=0)


def rank_coefficients(ranking: jax.Array, m: int) -> jax.Array:
  """Per-candidate coefficients c `[m]` of `g = (1/|S|) Σ_i c_i ξ_i` (sum to 0).

  `c = 2r − m + 1` for the candidate at 0-based position r of the ranking, `c = k` for every
  unreturned candidate: the number of pairs in which it is the worse minus the better one.
  """
  ranking = jnp.asarray(ranking, jnp.int32)
  k = _check_ranking(ranking, m, "rank_coefficients")
  returned, position = _positions(ranking, m)
  return jnp.where(returned, 2 * position - m + 1, k).astype(jnp.float32)


def rank_coefficients_official(ranking: jax.Array, m: int) -> jax.Array:
  """Ascent weights of the official demo (`offset=1`, reproduction only), `[m]`.

  `w = m − 2r` for the candidate at position r, `w = −k` for unreturned ones, i.e.
  `w = −c + 1[returned]`: they point towards smaller f (descent) and sum to k, not 0.
  Code: TZW1998/Taming-Stable-Diffusion-with-Human-Ranking-Feedback, `optimizer.py`.
  """
  ranking = jnp.asarray(ranking, jnp.int32)
  returned, _ = _positions(ranking, m)
  return -rank_coefficients(ranking, m) + returned.astype(jnp.float32)


def combine(perturbations: PyTree, coefficients: jax.Array) -> PyTree:
  """`Σ_i coefficients_i · perturbations_i` over the leading axis of every leaf."""
  return jax.tree_util.tree_map(
      lambda xi: jnp.tensordot(coefficients.astype(xi.dtype), xi, axes=1), perturbations
  )


def rank_direction(perturbations: PyTree, ranking: jax.Array) -> PyTree:
  """`g = (1/|S|) Σ_i c_i ξ_i` from perturbations (leading axis m) and a ranking `[k]`.

  Equals the mean of `ξ_worse − ξ_better` over the pair DAG S; points towards increasing f.
  """
  m = _leading_size(perturbations)
  ranking = jnp.asarray(ranking, jnp.int32)
  k = _check_ranking(ranking, m, "rank_direction")
  return combine(perturbations, rank_coefficients(ranking, m) / num_pairs(m, k))


def _leading_size(tree: PyTree) -> int:
  sizes = {leaf.shape[0] for leaf in jax.tree_util.tree_leaves(tree)}
  if len(sizes) != 1:
    raise ValueError(f"perturbation leaves disagree on the leading axis m: {sorted(sizes)}.")
  return sizes.pop()


def global_norm(tree: PyTree) -> jax.Array:
  """`sqrt(Σ over leaves of Σ x²)`."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


def safe_normalize(tree: PyTree) -> PyTree:
  """`tree / ‖tree‖` (global norm); a zero tree stays zero (no NaN)."""
  norm = global_norm(tree)
  scale = jnp.where(norm > 0, 1.0 / jnp.where(norm > 0, norm, 1.0), 0.0)
  return jax.tree_util.tree_map(lambda x: x * scale.astype(x.dtype), tree)


def sample_perturbations(
    key: jax.Array, params: PyTree, m: int, *, perturbation: str = "gaussian"
) -> PyTree:
  """m random directions shaped like `params` (leaves `[m, *leaf.shape]`).

  `"gaussian"`: `ξ ~ N(0, I_d)`; `"sphere"`: `u/‖u‖` with the norm taken over the whole pytree
  of one candidate (uniform on the unit sphere of R^d, as in the authors' notebooks).
  """
  if perturbation not in PERTURBATIONS:
    raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {perturbation!r}.")
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, len(leaves))
  xi = treedef.unflatten([
      jax.random.normal(k_, (m, *jnp.shape(leaf)), jnp.result_type(leaf, jnp.float32))
      for k_, leaf in zip(keys, leaves)
  ])
  if perturbation == "sphere":
    xi = jax.vmap(safe_normalize)(xi)
  return xi


def perturb(params: PyTree, perturbations: PyTree, mu) -> PyTree:
  """Candidates `x + μ·ξ_i` (leaves `[m, ...]`)."""
  return jax.tree_util.tree_map(lambda x, xi: x[None] + mu * xi, params, perturbations)


def rank_grad_estimate(
    params: PyTree,
    key: jax.Array,
    oracle: Oracle,
    *,
    m: int = 10,
    mu: float = 0.1,
    perturbation: str = "gaussian",
    include_center: bool = False,
) -> tuple[PyTree, dict[str, jax.Array]]:
  """ZO-RankSGD's rank-based gradient estimate at `params` (one oracle call, m queries).

  `g = (1/|S|) Σ_{(i better, j worse) ∈ S} (ξ_j − ξ_i)` with the ranking of the candidates
  `x + μ·ξ_i` returned by `oracle`; it estimates the *direction* of ∇f (scale-free) and its
  alignment with ∇f improves with m and k.

  Args:
    params: x, any pytree of float arrays.
    key: PRNG key (perturbations, and the oracle's own randomness).
    oracle: `oracle(candidates, key) -> ranking [k]` (see `alignment.zo.oracles`).
    m: number of queries per call (>= 2).
    mu: smoothing radius μ > 0.
    perturbation: "gaussian" (default) or "sphere".
    include_center: x itself is one of the m queries (`ξ_0 = 0`), the others are perturbed.

  Returns:
    `(g, info)`: g shaped like `params` (stop-gradient), info with `ranking` `[k]`.
  """
  check_m_mu(m, mu, "rank_grad_estimate")
  xi_key, oracle_key = jax.random.split(key)
  xi = sample_perturbations(xi_key, params, m, perturbation=perturbation)
  if include_center:
    xi = jax.tree_util.tree_map(lambda a: a.at[0].set(0.0), xi)
  ranking = oracle(perturb(params, xi, mu), oracle_key)
  g = jax.lax.stop_gradient(rank_direction(xi, ranking))
  return g, {"ranking": ranking}
