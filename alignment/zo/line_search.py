"""Human-in-the-loop ZO-RankSGD with a ranking line search (the paper's official demo).

Paper: *Zeroth-Order Optimization Meets Human Feedback: Provable Learning via Ranking Oracles*
(Tang, Rybin, Chang; ICLR 2024); official demo: TZW1998/Taming-Stable-Diffusion-with-Human-
Ranking-Feedback (`optimizer.py`, class `RankSGD`).

Rounds alternate between two modes, each asking the oracle (a person) once about m candidates:

- `grad_est`: candidates `x + μ·ξ_i`, ξ_i ~ N(0, I); from the top-k ranking
  `u = Σ_i w_i·(μ·ξ_i)/|S|` (descent weights, see below); running average
  `search_dir ← (n·search_dir + u)/(n + 1)`, `n ← n + 1`; `prev_best` = the top-ranked candidate.
- `line_search`: candidates `x + η·0.5^i·search_dir` (i = 0..m−3), `prev_best` and `x`; only
  the best one counts. If it is not x: `x ← best`, `search_dir ← 0`, `n ← 0`; otherwise x stays
  and the direction keeps accumulating.

Candidates are shown in a random order (the person must not know which is which). Weights:

- `rank_line_search`: `w = −c` with the pair coefficients c of `alignment.zo.estimator`
  (`2r − m + 1` returned, `k` unreturned), i.e. `u = −μ·g`; they sum to 0 (default).
- `rank_line_search_official`: the demo's `w = m − 2r` (returned), `−k` (unreturned), i.e. `−c`
  plus a +1 offset on every returned candidate (reproduction only).

The state is a pytree and `propose`/`update` are jitted pure functions, so a session can be
saved, resumed, or driven by a UI; `round` runs one full round with an oracle.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from alignment.zo.estimator import (
    check_m_mu,
    combine,
    num_pairs,
    perturb,
    rank_coefficients,
    rank_coefficients_official,
    sample_perturbations,
)

PyTree = Any

GRAD_EST = 0
LINE_SEARCH = 1


class LineSearchState(NamedTuple):
  """State of a ranking line search (all leaves are arrays; `x`-shaped pytrees where noted)."""

  x: PyTree  # current best point
  search_dir: PyTree  # accumulated descent direction (x-shaped)
  n_accum: jax.Array  # int32: grad_est rounds averaged into search_dir
  prev_best: PyTree  # top-ranked candidate of the last grad_est round (x-shaped)
  mode: jax.Array  # int32: GRAD_EST or LINE_SEARCH
  key: jax.Array  # PRNG key of the current round


class RankLineSearch(NamedTuple):
  """`init(x, key)`, `propose(state)`, `update(state, ranking)` and `round(state, oracle)`."""

  init: Callable[[PyTree, jax.Array], LineSearchState]
  propose: Callable[[LineSearchState], PyTree]
  update: Callable[[LineSearchState, jax.Array], LineSearchState]
  round: Callable[..., tuple[LineSearchState, dict]]


def _make_line_search(
    descent_weights: Callable[[jax.Array, int], jax.Array],
    *,
    m: int,
    mu: float,
    step_size: float,
    where: str,
) -> RankLineSearch:
  """Shared body of both variants; `descent_weights(slot_ranking, m) -> w [m]`."""
  check_m_mu(m, mu, where)
  if m < 3:
    raise ValueError(f"{where}: m={m} must be >= 3 (line search shows m−2 steps, prev_best, x).")
  if not step_size > 0:
    raise ValueError(f"{where}: step_size must be > 0, got {step_size}.")
  scales = step_size * 0.5 ** jnp.arange(m - 2, dtype=jnp.float32)

  def randomness(state):
    """The round's ξ `[m, ...]` and display permutation (re-derived identically by update)."""
    xi_key, perm_key, _, _ = jax.random.split(state.key, 4)
    xi = sample_perturbations(xi_key, state.x, m, perturbation="gaussian")
    return xi, jax.random.permutation(perm_key, m)

  def slots(state, xi):
    """Unshuffled candidates `[m, ...]` of the current mode."""

    def grad_est_slots():
      return perturb(state.x, xi, mu)

    def line_search_slots():
      def leaf(x, d, best):
        steps = x[None] + scales.reshape((m - 2,) + (1,) * x.ndim).astype(x.dtype) * d[None]
        return jnp.concatenate([steps, best[None], x[None]], axis=0)

      return jax.tree_util.tree_map(leaf, state.x, state.search_dir, state.prev_best)

    return jax.lax.cond(state.mode == GRAD_EST, grad_est_slots, line_search_slots)

  @jax.jit
  def propose(state: LineSearchState) -> PyTree:
    xi, perm = randomness(state)
    return jax.tree_util.tree_map(lambda a: a[perm], slots(state, xi))

  @jax.jit
  def update(state: LineSearchState, ranking: jax.Array) -> LineSearchState:
    xi, perm = randomness(state)
    candidates = slots(state, xi)
    slot_ranking = perm[jnp.asarray(ranking, jnp.int32)]
    best = jax.tree_util.tree_map(lambda a: a[slot_ranking[0]], candidates)
    next_key = jax.random.split(state.key, 4)[3]

    def after_grad_est():
      k = slot_ranking.shape[0]
      w = descent_weights(slot_ranking, m) / num_pairs(m, k)
      u = combine(jax.tree_util.tree_map(lambda a: mu * a, xi), w)
      n = state.n_accum.astype(jnp.float32)
      search_dir = jax.tree_util.tree_map(
          lambda d, v: (n * d + v) / (n + 1.0), state.search_dir, u
      )
      return LineSearchState(state.x, search_dir, state.n_accum + 1, best,
                             jnp.int32(LINE_SEARCH), next_key)

    def after_line_search():
      moved = slot_ranking[0] != m - 1  # slot m−1 is x itself

      def keep(new, old):
        return jax.tree_util.tree_map(lambda a, b: jnp.where(moved, a, b), new, old)

      zeros = jax.tree_util.tree_map(jnp.zeros_like, state.search_dir)
      return LineSearchState(
          keep(best, state.x), keep(zeros, state.search_dir),
          jnp.where(moved, 0, state.n_accum).astype(jnp.int32), state.prev_best,
          jnp.int32(GRAD_EST), next_key,
      )

    return jax.lax.cond(state.mode == GRAD_EST, after_grad_est, after_line_search)

  def init(x: PyTree, key: jax.Array) -> LineSearchState:
    zeros = jax.tree_util.tree_map(jnp.zeros_like, x)
    return LineSearchState(x, zeros, jnp.int32(0), x, jnp.int32(GRAD_EST), key)

  def round_(state: LineSearchState, oracle, pick_oracle: Optional[Any] = None):
    """One round: propose, ask `oracle` (top-k; `pick_oracle`, if given, in line-search
    rounds, of which only the first place is used), update. Returns `(state, info)`."""
    mode = int(state.mode)
    candidates = propose(state)
    ask = pick_oracle if (mode == LINE_SEARCH and pick_oracle is not None) else oracle
    ranking = jnp.asarray(ask(candidates, jax.random.split(state.key, 4)[2]), jnp.int32)
    new_state = update(state, ranking)
    info = {"mode": "grad_est" if mode == GRAD_EST else "line_search", "ranking": ranking,
            "moved": mode == LINE_SEARCH and int(new_state.n_accum) == 0}
    return new_state, info

  return RankLineSearch(init=init, propose=propose, update=update, round=round_)


def rank_line_search(*, m: int = 10, mu: float, step_size: float) -> RankLineSearch:
  """Ranking line search with the pair-formula weights `w = −c` (sum to 0; the default).

  Args:
    m: candidates per round (>= 3).
    mu: smoothing radius μ of the grad_est candidates (the demo's `smoothing_para`).
    step_size: η, the longest line-search step is `η·search_dir` (the demo's `stepsize`).
  """
  return _make_line_search(
      lambda ranking, m_: -rank_coefficients(ranking, m_),
      m=m, mu=mu, step_size=step_size, where="rank_line_search",
  )


def rank_line_search_official(*, m: int = 10, mu: float, step_size: float) -> RankLineSearch:
  """Ranking line search with the official demo's weights `m − 2r` / `−k` (+1 offset).

  Reproduces TZW1998/Taming-Stable-Diffusion-with-Human-Ranking-Feedback; the returned
  candidates get one extra unit of weight, so `u` also drifts towards their mean.
  """
  return _make_line_search(
      rank_coefficients_official, m=m, mu=mu, step_size=step_size,
      where="rank_line_search_official",
  )
