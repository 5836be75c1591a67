"""Ranking oracles: m candidates in, the indices of the best k (best first) out.

Paper: *Zeroth-Order Optimization Meets Human Feedback: Provable Learning via Ranking Oracles*
(Tang, Rybin, Chang; ICLR 2024), the (m, k)-ranking oracle `O_f^{(m,k)}`.

Minimisation convention: position 0 of a ranking is the candidate with the **smallest** f.
Every oracle has the same small interface,

    oracle(candidates, key) -> ranking          ranking: int32 [k], distinct ids in [0, m)

where `candidates` is a pytree whose leaves carry a leading axis of size m (candidate i is
`tree_map(lambda a: a[i], candidates)`) and `key` is a PRNG key (ignored by deterministic
oracles). Oracles built from an objective `f(candidate) -> scalar` evaluate it with `vmap`, so
they run under `jit`; the human oracle runs on the host and `host_oracle` makes any host
oracle callable from jitted code.

Value-level primitives (`rank_oracle`, `plackett_luce_ranking`, `flip_ranking`) map a vector of
m objective values to a ranking; the factories compose them with an objective.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, TextIO

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

PyTree = Any
Oracle = Callable[[PyTree, jax.Array], jax.Array]
RankingFn = Callable[[jax.Array, jax.Array], jax.Array]


def _check_k(k, m: Optional[int], where: str) -> int:
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
    raise TypeError(f"{where}: k must be a Python int, got {k!r}.")
  if k < 1 or (m is not None and k > m):
    bound = f"[1, m={m}]" if m is not None else ">= 1"
    raise ValueError(f"{where}: k={k} is out of range {bound}.")
  return int(k)


def _num_candidates(candidates: PyTree, where: str) -> int:
  leaves = jax.tree_util.tree_leaves(candidates)
  if not leaves:
    raise ValueError(f"{where}: candidates is an empty pytree.")
  sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(
        f"{where}: every candidate leaf needs the same leading axis m; got leading sizes "
        f"{sorted(str(s) for s in sizes)}."
    )
  return sizes.pop()


def rank_oracle(values: jax.Array, *, k: int) -> jax.Array:
  """Exact (m, k)-ranking oracle on objective values: `argsort(values)[:k]`.

  Args:
    values: `[m]` objective values (smaller is better).
    k: number of returned candidates, `1 <= k <= m`.

  Returns:
    int32 `[k]`: indices of the k smallest values, best first (ties: lower index first).
  """
  values = jnp.asarray(values)
  if values.ndim != 1:
    raise ValueError(f"rank_oracle: values must be [m], got shape {values.shape}.")
  k = _check_k(k, values.shape[0], "rank_oracle")
  return jnp.argsort(values, stable=True)[:k].astype(jnp.int32)


def plackett_luce_ranking(
    values: jax.Array, key: jax.Array, *, k: int, temperature: float = 1.0
) -> jax.Array:
  """Top-k of a Plackett–Luce ranking with utilities `−f/τ` (Gumbel-top-k trick).

  `P(first = i) = exp(−f_i/τ) / Σ_j exp(−f_j/τ)`, then the same among the rest, and so on;
  sampled exactly as `argsort(f/τ − G)`, `G_i ~ Gumbel(0, 1)` i.i.d. τ → 0 gives `rank_oracle`.

  Args:
    values: `[m]` objective values (smaller is better).
    key: PRNG key.
    k: number of returned candidates.
    temperature: τ > 0.

  Returns:
    int32 `[k]`.
  """
  if not temperature > 0:
    raise ValueError(f"plackett_luce_ranking: temperature must be > 0, got {temperature}.")
  values = jnp.asarray(values, jnp.float32)
  gumbel = jax.random.gumbel(key, values.shape, jnp.float32)
  return rank_oracle(values / temperature - gumbel, k=k)


def flip_ranking(values: jax.Array, key: jax.Array, *, k: int, flip_prob: float) -> jax.Array:
  """Top-k by wins in a round-robin of noisy comparisons (each flipped with `flip_prob`).

  Every unordered pair {i, j} is compared once; the true outcome (`f_i < f_j`) is reported
  wrongly with probability p, independently per pair. Candidates are ranked by their number
  of reported wins (Copeland score), ties broken uniformly at random. p = 0 recovers the exact
  ranking (up to ties in f); m = 2 gives a comparison oracle that errs with probability p.

  Args:
    values: `[m]` objective values (smaller is better).
    key: PRNG key.
    k: number of returned candidates.
    flip_prob: p in [0, 0.5].

  Returns:
    int32 `[k]`.
  """
  if not 0.0 <= flip_prob <= 0.5:
    raise ValueError(f"flip_ranking: flip_prob must be in [0, 0.5], got {flip_prob}.")
  values = jnp.asarray(values, jnp.float32)
  m = values.shape[0]
  flip_key, tie_key = jax.random.split(key)
  beats = values[:, None] < values[None, :]  # [m, m]: i truly beats j
  upper = jnp.triu(jax.random.bernoulli(flip_key, flip_prob, (m, m)), 1)
  flips = upper | upper.T  # one coin per unordered pair
  ties = values[:, None] == values[None, :]
  reported = jnp.where(ties, False, beats ^ flips)
  wins = jnp.sum(reported, axis=1).astype(jnp.float32)
  jitter = jax.random.uniform(tie_key, (m,), jnp.float32)  # < 1: only breaks ties
  return rank_oracle(-(wins + jitter), k=k)


def _value_oracle(f: Callable[[PyTree], jax.Array], ranking_fn: RankingFn) -> Oracle:
  """Composes an objective with a value-level ranking function."""

  def oracle(candidates: PyTree, key: jax.Array) -> jax.Array:
    values = jax.vmap(f)(candidates)
    return jax.lax.stop_gradient(ranking_fn(values, key))

  return oracle


def exact_oracle(f: Callable[[PyTree], jax.Array], *, k: int) -> Oracle:
  """Exact (m, k)-ranking oracle of `f` (the candidates with the k smallest f, best first)."""
  k = _check_k(k, None, "exact_oracle")
  return _value_oracle(f, lambda values, key: rank_oracle(values, k=k))


def plackett_luce_oracle(
    f: Callable[[PyTree], jax.Array], *, k: int, temperature: float = 1.0
) -> Oracle:
  """Noisy ranking oracle: Plackett–Luce with utilities `−f/τ` (see `plackett_luce_ranking`)."""
  k = _check_k(k, None, "plackett_luce_oracle")
  if not temperature > 0:
    raise ValueError(f"plackett_luce_oracle: temperature must be > 0, got {temperature}.")
  return _value_oracle(
      f, lambda values, key: plackett_luce_ranking(values, key, k=k, temperature=temperature)
  )


def flip_oracle(f: Callable[[PyTree], jax.Array], *, k: int, flip_prob: float) -> Oracle:
  """Noisy ranking oracle: each pairwise comparison flipped with `flip_prob` (`flip_ranking`)."""
  k = _check_k(k, None, "flip_oracle")
  if not 0.0 <= flip_prob <= 0.5:
    raise ValueError(f"flip_oracle: flip_prob must be in [0, 0.5], got {flip_prob}.")
  return _value_oracle(
      f, lambda values, key: flip_ranking(values, key, k=k, flip_prob=flip_prob)
  )


def comparison_oracle(f: Callable[[PyTree], jax.Array], *, flip_prob: float = 0.0) -> Oracle:
  """The comparison oracle (m = 2, k = 1): which of two candidates has the smaller f.

  With `flip_prob > 0` the answer is wrong with that probability.
  """
  inner = flip_oracle(f, k=1, flip_prob=flip_prob)

  def oracle(candidates: PyTree, key: jax.Array) -> jax.Array:
    m = _num_candidates(candidates, "comparison_oracle")
    if m != 2:
      raise ValueError(f"comparison_oracle: needs exactly m=2 candidates, got m={m}.")
    return inner(candidates, key)

  return oracle


def negated_returns(
    return_fn: Callable[[PyTree, jax.Array], jax.Array]
) -> Callable[[PyTree, jax.Array], jax.Array]:
  """Value oracle `(candidates, key) -> f [m]` with `f = −return` of one episode per candidate.

  `return_fn(candidate, key)` runs one (or a few) episodes; every candidate gets its own key.
  This is what value-based baselines (e.g. `evolution_strategy`) see in policy search.
  """

  def values(candidates: PyTree, key: jax.Array) -> jax.Array:
    m = _num_candidates(candidates, "negated_returns")
    return -jax.vmap(return_fn)(candidates, jax.random.split(key, m))

  return values


def returns_oracle(
    return_fn: Callable[[PyTree, jax.Array], jax.Array], *, k: int
) -> Oracle:
  """Ranking oracle from episode returns: the top-k candidates by **descending** return.

  Policy search in the minimisation convention (`f = −return`, see `negated_returns`): only
  the order of the returns is revealed to the optimiser.
  """
  k = _check_k(k, None, "returns_oracle")
  values = negated_returns(return_fn)

  def oracle(candidates: PyTree, key: jax.Array) -> jax.Array:
    return jax.lax.stop_gradient(rank_oracle(values(candidates, key), k=k))

  return oracle


# ------------------------------------------------------------------------------------------
# Host oracles: a person at a terminal, or any Python function, called from jitted code.


def _default_summary(candidate: PyTree) -> str:
  leaves = jax.tree_util.tree_leaves(candidate)
  return "; ".join(
      np.array2string(np.asarray(leaf), precision=3, threshold=8, separator=", ")
      for leaf in leaves
  )


def _parse_ranking(line: str, *, k: int, m: int) -> tuple[Optional[list[int]], str]:
  """Parses `k` distinct 1-based ids from `line`; returns (ids, "") or (None, error)."""
  tokens = line.replace(",", " ").split()
  if not tokens:
    return None, f"no ids given; enter exactly {k} id(s)."
  ids = []
  for token in tokens:
    try:
      ids.append(int(token))
    except ValueError:
      return None, f"{token!r} is not an integer id."
  for i in ids:
    if not 1 <= i <= m:
      return None, f"id {i} is out of range 1..{m}."
  seen = set()
  for i in ids:
    if i in seen:
      return None, f"id {i} is repeated; every id may appear once."
    seen.add(i)
  if len(ids) != k:
    return None, f"expected exactly {k} id(s), got {len(ids)}."
  return ids, ""


def human_oracle(
    *,
    k: int,
    summarize: Callable[[PyTree], str] = _default_summary,
    input_stream: Optional[TextIO] = None,
    output_stream: Optional[TextIO] = None,
    shuffle: bool = True,
    seed: int = 0,
) -> Oracle:
  """A person ranks the candidates at a terminal (host-side oracle, not jittable by itself).

  The candidates are shown as numbered lines `ID: summary` (ids 1..m, in a random order when
  `shuffle`, so that the person cannot tell which candidate is which); the person types the ids
  of the best k, best first, separated by spaces or commas. Invalid input — non-integers,
  out-of-range ids, repeats, a wrong count, an empty line — is explained and asked again; it
  never raises. End of input raises `EOFError`.

  Args:
    k: number of ids to read.
    summarize: candidate (one slice of the pytree, numpy leaves) -> printable one-line summary.
    input_stream: where answers are read (default `sys.stdin`); inject a `StringIO` in tests.
    output_stream: where candidates and prompts are written (default `sys.stdout`).
    shuffle: show the candidates in a random order.
    seed: seed of the display shuffles.

  Returns:
    `oracle(candidates, key=None) -> np.ndarray int32 [k]` (0-based candidate indices). Wrap it
    with `host_oracle` to call it from jitted code.
  """
  k = _check_k(k, None, "human_oracle")
  rng = np.random.default_rng(seed)

  def oracle(candidates: PyTree, key: Optional[jax.Array] = None) -> np.ndarray:
    del key
    inp = sys.stdin if input_stream is None else input_stream
    out = sys.stdout if output_stream is None else output_stream
    candidates = jax.tree_util.tree_map(np.asarray, candidates)
    m = _num_candidates(candidates, "human_oracle")
    if k > m:
      raise ValueError(f"human_oracle: k={k} but only m={m} candidates.")
    order = rng.permutation(m) if shuffle else np.arange(m)  # display slot -> candidate
    out.write("Candidates:\n")
    for slot, index in enumerate(order):
      candidate = jax.tree_util.tree_map(lambda a, i=index: a[i], candidates)
      out.write(f"  {slot + 1}: {summarize(candidate)}\n")
    what = "the id of the best candidate" if k == 1 else f"the ids of the best {k}, best first"
    while True:
      out.write(f"Enter {what}: ")
      out.flush()
      line = inp.readline()
      if not line:
        raise EOFError("human_oracle: input ended before a valid ranking was entered.")
      ids, error = _parse_ranking(line, k=k, m=m)
      if ids is not None:
        return np.asarray([order[i - 1] for i in ids], np.int32)
      out.write(f"Invalid ranking: {error} Please try again.\n")

  return oracle


def host_oracle(fn: Callable[[PyTree], Any], *, k: int, ordered: bool = True) -> Oracle:
  """Makes a host-side oracle (a person, a remote reward model) callable from jitted code.

  Uses `jax.experimental.io_callback`: the call is a side effect that `jit` neither drops nor
  repeats; `ordered=True` (right for a person) keeps the calls in program order but cannot be
  `vmap`-ed. The host function receives numpy candidates and must return k distinct ids in
  [0, m); anything else raises a ValueError naming the offending ranking.
  """
  k = _check_k(k, None, "host_oracle")

  def checked(candidates: PyTree) -> np.ndarray:
    m = _num_candidates(candidates, "host_oracle")
    ranking = np.asarray(fn(candidates))
    if (
        ranking.shape != (k,)
        or not np.issubdtype(ranking.dtype, np.integer)
        or len(set(ranking.tolist())) != k
        or ranking.min() < 0
        or ranking.max() >= m
    ):
      raise ValueError(
          f"host_oracle: the host function must return {k} distinct integer ids in [0, {m}), "
          f"got {ranking!r}."
      )
    return ranking.astype(np.int32)

  def oracle(candidates: PyTree, key: Optional[jax.Array] = None) -> jax.Array:
    del key
    shape = jax.ShapeDtypeStruct((k,), jnp.int32)
    return io_callback(checked, shape, candidates, ordered=ordered)

  return oracle
