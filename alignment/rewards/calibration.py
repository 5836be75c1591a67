"""CHARM: reward-model calibration with Chatbot-Arena scores.

Paper: *CHARM: Calibrating Reward Models With Chatbot Arena Scores* (2025); code
`HexagonStar/CHARM` (`src/calibrate.py`, `src/utils.py`). A reward model may over-value the
responses of some policy models; the Mismatch Degree measures it against Arena Elo, and
per-model score offsets fitted to the Elo win rates correct it.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax

from alignment import arrays
from alignment.rewards.arena import elo_win_probability

Array = jax.Array


def mismatch_degree(
    scores_over: Array,
    scores_ref: Array,
    elo_over,
    elo_ref,
    *,
    where: Optional[Array] = None,
) -> Array:
  r"""Mismatch Degree of a reward model between an over-valued and a reference policy model.

  `wr = mean_i 1[s_over(x_i) > s_ref(x_i)]` (same prompts; ties count as losses),
  `wr_elo = 1/(1 + 10^{(Elo_ref − Elo_over)/400})`, `MD = (wr − wr_elo)/max(wr_elo, 1 − wr_elo)`
  in [−1, 1]; positive means the reward model prefers the over-valued model more than Arena does.

  Args:
    scores_over, scores_ref: `[n]` (or `[..., n]`) reward-model scores of the two models'
      responses to the same n prompts.
    elo_over, elo_ref: Arena Elo ratings (scalars or `[...]`).
    where: optional `[..., n]` bool, valid prompts.

  Returns:
    `[...]` Mismatch Degree.

  >>> print(mismatch_degree(jnp.array([1., 1., 0., 1.]), jnp.zeros(4), 1000., 1000.))  # (.75−.5)/.5
  0.5
  """
  scores_over = arrays.f32(scores_over)
  arrays.check_shapes("mismatch_degree", "scores_over", scores_over, scores_ref=scores_ref,
                      where=where)
  wins = scores_over > arrays.f32(scores_ref)
  wr = arrays.masked_mean(wins.astype(jnp.float32), arrays.valid_mask(scores_over, where), axis=-1)
  wr_elo = elo_win_probability(elo_over, elo_ref)
  return (wr - wr_elo) / jnp.maximum(wr_elo, 1.0 - wr_elo)


def elo_win_matrix(elos: Array) -> Array:
  """Target win rates `W_elo[i, j] = 1/(1 + 10^{(Elo_j − Elo_i)/400})`, `[M, M]`, diagonal 0."""
  elos = arrays.f32(elos)
  w = elo_win_probability(elos[:, None], elos[None, :])
  return jnp.where(jnp.eye(elos.shape[0], dtype=bool), 0.0, w)


def charm_win_matrix(
    scores: Array,
    offsets: Array,
    *,
    temperature: float = 0.1,
    block_size: int = 1000,
) -> Array:
  r"""Soft win-rate matrix of calibrated scores, `[M, M]`, diagonal 0.

  `W(o)[i, j] = Σ_b (n_b/n)·mean_{a, a' ∈ block b} σ((s_{i,a} + o_i − s_{j,a'} − o_j)/τ)`: all
  prompt pairs (a, a') within consecutive blocks of `block_size` (1000) prompts, not same-prompt
  pairs, each block weighted by its size n_b (CHARM's `calculate_winrate_matrix`); τ = 0.1.
  Memory is O(M·block_size²) (a scan over blocks, a map over rows i).

  Args:
    scores: `[M, n]` reward-model scores of M policy models' responses to the same n prompts.
    offsets: `[M]` per-model offsets o.
    temperature: τ > 0.
    block_size: prompts per block.
  """
  arrays.check_positive("temperature", temperature, where="charm_win_matrix")
  if block_size < 1:
    raise ValueError(f"charm_win_matrix: block_size must be >= 1, got {block_size}.")
  scores = arrays.f32(scores)
  if scores.ndim != 2:
    raise ValueError(f"charm_win_matrix: scores must be [M, n], got shape {scores.shape}.")
  num_models, n = scores.shape
  if jnp.shape(offsets) != (num_models,):
    raise ValueError(f"charm_win_matrix: offsets must have shape ({num_models},), got "
                     f"{jnp.shape(offsets)}.")
  num_blocks = -(-n // block_size)
  pad = num_blocks * block_size - n
  x = jnp.pad(scores + arrays.f32(offsets)[:, None], ((0, 0), (0, pad)))
  valid = jnp.arange(num_blocks * block_size) < n
  x = x.reshape(num_models, num_blocks, block_size).transpose(1, 0, 2)  # [nb, M, B]
  valid = valid.reshape(num_blocks, block_size)

  def block(total, xv):
    xb, vb = xv  # [M, B], [B]
    pair_valid = vb[:, None] & vb[None, :]
    count = jnp.sum(vb, dtype=jnp.float32)

    def row(xi):  # [B] -> [M]: Σ_{a, a'} σ((x_i,a − x_j,a')/τ) over valid pairs, for every j.
      p = jax.nn.sigmoid((xi[None, :, None] - xb[:, None, :]) / temperature)
      return jnp.sum(jnp.where(pair_valid, p, 0.0), axis=(1, 2))

    sums = jax.lax.map(row, xb)  # [M, M]
    return total + sums / jnp.maximum(count, 1.0), None

  total = jax.lax.scan(block, jnp.zeros((num_models, num_models)), (x, valid))[0]
  return jnp.where(jnp.eye(num_models, dtype=bool), 0.0, total / n)


def charm_offsets(
    scores: Array,
    elos: Array,
    *,
    temperature: float = 0.1,
    block_size: int = 1000,
    learning_rate: float = 0.01,
    num_epochs: int = 100,
) -> Array:
  r"""CHARM per-model score offsets: `argmin_o MSE(W(o), W_elo)` by Adam.

  `W(o)` is `charm_win_matrix`, `W_elo = elo_win_matrix(elos)`; the MSE is over all M² entries
  (both diagonals are 0). Adam, learning rate 0.01, 100 full-batch steps, from o = 0. The
  official code outputs o from a small MLP with a zero input; here o is optimised directly (same
  objective, different optimisation path). Only differences `o_i − o_j` matter. Then
  `charm_pairs(scores + o[:, None])` builds the calibrated preference pairs.

  Args:
    scores: `[M, n]` reward-model scores of M policy models on the same n prompts.
    elos: `[M]` Arena Elo ratings of the M models.
    temperature, block_size: as `charm_win_matrix`.
    learning_rate, num_epochs: Adam settings.

  Returns:
    `[M]` offsets.
  """
  scores = arrays.f32(scores)
  if scores.ndim != 2 or jnp.shape(elos) != scores.shape[:1]:
    raise ValueError(f"charm_offsets: scores must be [M, n] and elos [M]; got shapes "
                     f"{scores.shape} and {jnp.shape(elos)}.")
  target = jax.lax.stop_gradient(elo_win_matrix(elos))
  loss = lambda o: jnp.mean(jnp.square(
      charm_win_matrix(scores, o, temperature=temperature, block_size=block_size) - target))
  optimizer = optax.adam(learning_rate)

  def epoch(carry, _):
    o, state = carry
    updates, state = optimizer.update(jax.grad(loss)(o), state, o)
    return (optax.apply_updates(o, updates), state), None

  o0 = jnp.zeros(scores.shape[:1], jnp.float32)
  return jax.lax.scan(epoch, (o0, optimizer.init(o0)), None, length=num_epochs)[0][0]


def charm_pairs(calibrated_scores: Array) -> tuple[Array, Array]:
  """Per prompt, `(chosen, rejected)` model indices `[n]`: argmax and argmin of `[M, n]` scores."""
  calibrated_scores = arrays.f32(calibrated_scores)
  if calibrated_scores.ndim != 2:
    raise ValueError("charm_pairs: calibrated_scores must be [M, n].")
  return jnp.argmax(calibrated_scores, axis=0), jnp.argmin(calibrated_scores, axis=0)
