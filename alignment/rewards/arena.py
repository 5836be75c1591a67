"""Chatbot-Arena ratings: Bradley–Terry maximum likelihood and online Elo.

Paper: *Chatbot Arena: An Open Platform for Evaluating LLMs by Human Preference* (Chiang et al.,
ICML 2024); code `lm-sys/FastChat` (`fastchat/serve/monitor/elo_analysis.py`).

Battles are three arrays of equal length N: `model_a`, `model_b` (int model indices in
`[0, num_models)`) and `outcomes` (1 = a wins, 0.5 = tie, 0 = b wins).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from alignment import arrays

Array = jax.Array


def elo_win_probability(rating_a, rating_b, *, scale: float = 400.0, base: float = 10.0) -> Array:
  r"""Expected score of a against b: `E_a = 1 / (1 + base^{(R_b − R_a)/scale})`.

  Computed as `σ(ln(base)·(R_a − R_b)/scale)` (stable for any gap).

  >>> print(elo_win_probability(1400., 1000.))  # 1/(1 + 10^{-1})
  0.9090...
  """
  return jax.nn.sigmoid(np.log(base) * (arrays.f32(rating_a) - arrays.f32(rating_b)) / scale)


def _battles(fn_name, model_a, model_b, outcomes, num_models, counts=None):
  """Checks concrete battle arrays; returns them as numpy (int, int, float64, float64)."""
  a, b = np.asarray(model_a), np.asarray(model_b)
  o = np.asarray(outcomes, np.float64)
  w = np.ones(o.shape) if counts is None else np.asarray(counts, np.float64)
  if not (a.ndim == 1 and a.shape == b.shape == o.shape == w.shape):
    raise ValueError(f"{fn_name}: model_a, model_b, outcomes (and counts) must be 1-D arrays of "
                     f"one length; got shapes {a.shape}, {b.shape}, {o.shape}, {w.shape}.")
  if not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)):
    raise ValueError(f"{fn_name}: model_a and model_b must hold integer model indices.")
  out_of_range = a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= num_models)
  if num_models < 1 or out_of_range:
    raise ValueError(f"{fn_name}: model indices must lie in [0, {num_models}).")
  if (a == b).any():
    raise ValueError(f"{fn_name}: battle {int(np.argmax(a == b))} pits model {a[a == b][0]} "
                     "against itself.")
  bad = ~np.isin(o, (0.0, 0.5, 1.0))
  if bad.any():
    raise ValueError(f"{fn_name}: outcomes must be 1 (a wins), 0.5 (tie) or 0 (b wins); battle "
                     f"{int(np.argmax(bad))} has {o[bad][0]}.")
  if (w < 0).any() or not np.isfinite(w).all():
    raise ValueError(f"{fn_name}: counts must be finite and >= 0.")
  return a.astype(np.int32), b.astype(np.int32), o, w


def aggregate_battles(model_a, model_b, outcomes):
  """Unique `(a, b, o)` battles with their counts: `(a [U], b [U], o [U], counts [U])` (numpy)."""
  a, b, o = (np.asarray(x) for x in (model_a, model_b, outcomes))
  rows, counts = np.unique(np.stack([a, b, o * 2], axis=-1).astype(np.int64), axis=0,
                           return_counts=True)
  return (rows[:, 0].astype(np.int32), rows[:, 1].astype(np.int32), rows[:, 2] / 2.0,
          counts.astype(np.float64))


def _check_finite_mle(a, b, o, w, num_models) -> None:
  """Raises unless the BT maximum-likelihood ratings exist (Zermelo / Ford's condition).

  They exist iff every model has battles and the directed graph "i beat j at least once (a tie
  counts both ways)" is strongly connected.
  """
  beat = np.zeros((num_models, num_models), bool)
  np.logical_or.at(beat, (a, b), (w > 0) & (o > 0))
  np.logical_or.at(beat, (b, a), (w > 0) & (o < 1))
  played = beat.any(0) | beat.any(1)
  if not played.all():
    raise ValueError(f"arena_bt_fit: models {np.flatnonzero(~played).tolist()} have no battles; "
                     "their ratings are undefined.")
  reach = beat | np.eye(num_models, dtype=bool)
  for _ in range(int(np.ceil(np.log2(max(num_models, 2))))):
    reach = reach | ((reach.astype(np.int64) @ reach.astype(np.int64)) > 0)
  if not reach.all():
    never_lost = np.flatnonzero(~beat.any(0)).tolist()
    never_won = np.flatnonzero(~beat.any(1)).tolist()
    i, j = np.argwhere(~reach)[0]
    raise ValueError(
        "arena_bt_fit: the Bradley–Terry maximum-likelihood ratings are infinite: the 'beat' graph "
        f"is not strongly connected (model {j} never beats model {i}, directly or through others). "
        f"Models that never lost: {never_lost}; never won: {never_won}. Add battles or fit with a "
        "penalty."
    )


def _bt_nll(theta, a, b, o, w):
  """Mean BT negative log-likelihood on the θ scale: `−Σ w[o·logσ(αΔ) + (1−o)·logσ(−αΔ)] / Σ w`."""
  z = np.log(10.0) * (theta[a] - theta[b])
  nll = o * jax.nn.softplus(-z) + (1.0 - o) * jax.nn.softplus(z)
  return jnp.sum(w * nll) / jnp.maximum(jnp.sum(w), 1.0)


def _fit(a, b, o, w, *, num_models, max_iter, tol):
  """L-BFGS from θ = 0 (optax, zoom line search) until ‖∇‖ ≤ tol or `max_iter` steps."""
  fun = lambda theta: _bt_nll(theta, a, b, o, w)
  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(fun)

  def step(carry):
    theta, state = carry
    value, grad = value_and_grad(theta, state=state)
    updates, state = solver.update(grad, state, theta, value=value, grad=grad, value_fn=fun)
    return optax.apply_updates(theta, updates), state

  def running(carry):
    _, state = carry
    count = otu.tree_get(state, "count")
    grad_norm = otu.tree_norm(otu.tree_get(state, "grad"))
    return (count == 0) | ((count < max_iter) & (grad_norm >= tol))

  theta0 = jnp.zeros((num_models,), jnp.float32)
  theta, _ = jax.lax.while_loop(running, step, (theta0, solver.init(theta0)))
  return theta


def _to_elo(theta, scale, init_rating, anchor):
  ratings = scale * theta + init_rating
  if anchor is not None:
    index, rating = anchor
    ratings = ratings + (rating - ratings[..., index][..., None])
  return ratings


def arena_bt_fit(
    model_a,
    model_b,
    outcomes,
    *,
    num_models: int,
    counts=None,
    scale: float = 400.0,
    init_rating: float = 1000.0,
    anchor: Optional[tuple[int, float]] = None,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> Array:
  r"""Bradley–Terry maximum-likelihood ratings on the Elo scale (Chatbot Arena).

  Minimises `−Σ w·[o·logσ(α(θ_a − θ_b)) + (1 − o)·logσ(−α(θ_a − θ_b))]` (α = ln 10; here divided
  by Σw, which leaves the minimiser unchanged and suits float32) with L-BFGS from θ = 0, at most
  `max_iter` = 100 iterations, gradient tolerance 1e−6, no penalty. The loss is shift-invariant
  and its gradient sums to 0, so the fit keeps `mean θ = 0`. `Elo = 400·θ + 1000`; `anchor =
  (model, rating)` then shifts all ratings so that model gets that rating. Ratings that would be
  infinite (a model wins or loses all its battles; in general a comparison graph that is not
  strongly connected) raise instead of stopping at the iteration cap.

  Args:
    model_a, model_b: `[N]` integer model indices (concrete: this is data analysis, not a
      training step).
    outcomes: `[N]` 1 (a wins), 0.5 (tie) or 0 (b wins).
    num_models: M.
    counts: optional `[N]` battle counts (e.g. from `aggregate_battles`), default 1.
    scale, init_rating: Elo = scale·θ + init_rating.
    anchor: optional `(model index, rating)`.
    max_iter, tol: L-BFGS limits.

  Returns:
    `[M]` Elo ratings.

  >>> print(arena_bt_fit([0, 0, 1], [1, 1, 0], [1., 1., 1.], num_models=2))  # 2:1 -> ±200·log10 2
  [1060.2... 939.7...]
  """
  a, b, o, w = _battles("arena_bt_fit", model_a, model_b, outcomes, num_models, counts)
  _check_finite_mle(a, b, o, w, num_models)
  theta = _jit_fit(*_padded(a, b, o, w), num_models=num_models, max_iter=max_iter, tol=tol)
  return _to_elo(theta, scale, init_rating, anchor)


def _padded(a, b, o, w):
  """Pads the battles to a power-of-two length with zero weights (fewer recompilations)."""
  size = 1 << max(int(len(a)) - 1, 0).bit_length()
  pad = lambda x, dtype: jnp.asarray(np.pad(x, (0, size - len(x))), dtype)
  return pad(a, jnp.int32), pad(b, jnp.int32), pad(o, jnp.float32), pad(w, jnp.float32)


_jit_fit = jax.jit(_fit, static_argnames=("num_models", "max_iter"))


class ArenaBootstrap(NamedTuple):
  ratings: Array  # [M] ratings of the full data.
  samples: Array  # [R, M] ratings of the bootstrap rounds.
  lower: Array  # [M] 2.5 % percentile.
  upper: Array  # [M] 97.5 % percentile.


def arena_bt_bootstrap(
    model_a,
    model_b,
    outcomes,
    key: Array,
    *,
    num_models: int,
    num_rounds: int = 1000,
    scale: float = 400.0,
    init_rating: float = 1000.0,
    anchor: Optional[tuple[int, float]] = None,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> ArenaBootstrap:
  r"""Bootstrap confidence intervals of `arena_bt_fit` (FastChat's MLE bootstrap).

  The battles are aggregated into U unique `(a, b, o)` outcomes; each of `num_rounds` (1000)
  rounds draws counts `~ Multinomial(N, counts/N)` and refits (all rounds in one vmapped L-BFGS);
  the interval is the 2.5 / 97.5 % percentiles. Only the full data is checked for finite ratings:
  a round where a model happens to win every battle stops at `max_iter` with a large rating, as
  in FastChat. Arguments as `arena_bt_fit`.
  """
  if num_rounds < 1:
    raise ValueError(f"arena_bt_bootstrap: num_rounds must be >= 1, got {num_rounds}.")
  a, b, o, w = _battles("arena_bt_bootstrap", model_a, model_b, outcomes, num_models)
  _check_finite_mle(a, b, o, w, num_models)
  a, b, o, w = aggregate_battles(a, b, o)
  total = int(w.sum())
  probs = jnp.broadcast_to(jnp.asarray(w / total, jnp.float32), (num_rounds, len(w)))
  round_counts = jax.random.multinomial(key, total, probs)
  args = (jnp.asarray(a), jnp.asarray(b), jnp.asarray(o, jnp.float32))
  fit = jax.jit(jax.vmap(lambda c: _fit(*args, c, num_models=num_models, max_iter=max_iter,
                                        tol=tol)))
  # The full data is fitted as one more row of the same vmapped solve (one compilation).
  weights = jnp.concatenate([jnp.asarray(w, jnp.float32)[None], round_counts], axis=0)
  ratings = _to_elo(fit(weights), scale, init_rating, anchor)
  full, samples = ratings[0], ratings[1:]
  lower, upper = jnp.percentile(samples, jnp.array([2.5, 97.5]), axis=0)
  return ArenaBootstrap(full, samples, lower, upper)


def online_elo(
    model_a,
    model_b,
    outcomes,
    *,
    num_models: int,
    k: float = 4.0,
    init_rating: float = 1000.0,
    scale: float = 400.0,
    base: float = 10.0,
) -> Array:
  r"""Online Elo ratings, one battle at a time in the given order (order-dependent).

  `E_a = 1/(1 + 10^{(R_b − R_a)/400})`, `R_a += K(S_a − E_a)`, `R_b += K(E_a − S_a)`, with
  `S_a ∈ {1, ½, 0}`, K = 4 and initial rating 1000 (FastChat's `compute_elo`). Each update
  conserves the total rating. Battles may be traced (a `lax.scan`), so this runs under `jit`.

  Args:
    model_a, model_b: `[N]` integer model indices.
    outcomes: `[N]` scores `S_a`.
    num_models: M.
    k, init_rating, scale, base: the Elo constants.

  Returns:
    `[M]` ratings after the last battle.

  >>> print(online_elo([0], [1], [1.], num_models=2))  # E = 1/2: ±4·(1 − 1/2)
  [1002.  998.]
  """
  if num_models < 1:
    raise ValueError(f"online_elo: num_models must be >= 1, got {num_models}.")
  a, b = jnp.asarray(model_a, jnp.int32), jnp.asarray(model_b, jnp.int32)
  o = arrays.f32(outcomes)
  if not (a.ndim == 1 and a.shape == b.shape == o.shape):
    raise ValueError(f"online_elo: model_a, model_b and outcomes must be 1-D arrays of one length; "
                     f"got shapes {a.shape}, {b.shape}, {o.shape}.")
  arrays.check_array_range("outcomes", o, low=0.0, high=1.0, where="online_elo")

  def battle(ratings, abo):
    i, j, s = abo
    delta = k * (s - elo_win_probability(ratings[i], ratings[j], scale=scale, base=base))
    return ratings.at[i].add(delta).at[j].add(-delta), None

  ratings0 = jnp.full((num_models,), init_rating, jnp.float32)
  return jax.lax.scan(battle, ratings0, (a, b, o))[0]
