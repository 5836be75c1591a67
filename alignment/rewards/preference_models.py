"""Preference models beyond a scalar reward: PAL ideal points and GPM.

Both give a preference probability `P(y_1 ≻ y_2) = σ(score)` from embeddings rather than from two
scalar rewards: PAL from distances or angles to a user's ideal point, GPM from a skew-symmetric
bilinear form that can express intransitive (cyclic) preferences.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from alignment import arrays
from alignment.rewards.bt import margin_logistic

Array = jax.Array
_PAL_KINDS = ("dist", "angle")
_PAL_LOSSES = ("ce", "hinge", "smooth_hinge")


# ------------------------------------------------------------------------------------------------
# PAL: pluralistic ideal-point reward model.


def pal_ideal_point(prototypes: Array, user_logits: Array) -> Array:
  r"""A user's ideal point `u(x) = Σ_k softmax(W_u)_k·g_k(x)`, `[..., d]`.

  Args:
    prototypes: `[..., K, d]` shared prototypes (PAL-A: free points `g_k`; PAL-B:
      prompt-conditioned `g_k(x)`).
    user_logits: `[..., K]` the user's mixture logits `W_u` (broadcastable against prototypes).
  """
  prototypes = arrays.f32(prototypes)
  if prototypes.ndim < 2:
    raise ValueError(f"pal_ideal_point: prototypes must be [..., K, d], got {prototypes.shape}.")
  weights = jax.nn.softmax(arrays.f32(user_logits), axis=-1)
  return jnp.sum(weights[..., :, None] * prototypes, axis=-2)


def pal_score(
    item_embeddings: Array,
    ideal_point: Array,
    *,
    kind: str = "dist",
    squared: bool = False,
    log_scale=math.log(1.0 / 0.07),
    max_scale: float = 100.0,
) -> Array:
  r"""PAL score of an item for a user: higher is preferred, `P(y_1 ≻ y_2 | u) = σ(s_1 − s_2)`.

  Paper: *PAL: Pluralistic Alignment Framework for Learning from Heterogeneous Preferences*
  (Chen et al., ICLR 2025); code `RamyaLab/pluralistic-alignment`.
  - `kind="dist"` (PAL-A): `s = −‖f − u‖₂` (`squared=True`: `−‖f − u‖²₂`, as the paper writes),
    so `P = σ(d_2 − d_1)`: items closer to the ideal point win.
  - `kind="angle"` (PAL-B): `s = min(exp(κ), 100)·cos(f, u)`, κ learnable, initialised to
    `log(1/0.07)`.

  Args:
    item_embeddings: `[..., d]` item embeddings `f(x, y)`.
    ideal_point: `[..., d]` (broadcastable) user ideal points `u(x)` (`pal_ideal_point`).
    kind: `"dist"` or `"angle"`.
    squared: squared distance (`dist` only).
    log_scale: κ (`angle` only).
    max_scale: clamp of `exp(κ)`.

  Returns:
    `[...]` scores.

  >>> print(pal_score(jnp.array([3., 4.]), jnp.zeros(2)))  # −5
  -5.0
  """
  if kind not in _PAL_KINDS:
    raise ValueError(f"pal_score: unknown kind {kind!r}; known: {_PAL_KINDS}.")
  f, u = arrays.f32(item_embeddings), arrays.f32(ideal_point)
  if f.ndim < 1 or u.ndim < 1 or f.shape[-1] != u.shape[-1]:
    raise ValueError(f"pal_score: item_embeddings and ideal_point must be [..., d] with one d; "
                     f"got {f.shape} and {u.shape}.")
  if kind == "dist":
    sq = jnp.sum(jnp.square(f - u), axis=-1)
    if squared:
      return -sq
    positive = sq > 0.0  # double-where: the gradient of sqrt at 0 is never formed
    return -jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  scale = jnp.minimum(jnp.exp(arrays.f32(log_scale)), max_scale)
  return scale * _cosine(f, u)


def _cosine(a: Array, b: Array, eps: float = 1e-8) -> Array:
  """`a·b / max(‖a‖‖b‖, eps)` (torch's `cosine_similarity` guard)."""
  norms = jnp.sqrt(jnp.sum(jnp.square(a), -1) * jnp.sum(jnp.square(b), -1) + 1e-30)
  return jnp.sum(a * b, axis=-1) / jnp.maximum(norms, eps)


def pal_loss(
    scores_1: Array,
    scores_2: Array,
    *,
    loss: str = "ce",
    gamma: float = 5.0,
    where: Optional[Array] = None,
    reduce_fn: arrays.ReduceFn = jnp.mean,
) -> Array:
  r"""PAL preference loss for `y_1 ≻ y_2` on `z = s_1 − s_2`.

  `"ce"` (default): `−logσ(z)`; `"hinge"`: `max(0, 1 − z)`; `"smooth_hinge"` (quadratically
  smoothed, γ = 5): `(1/(2γ))·max(0, 1 − z)²` if `z ≥ 1 − γ`, else `1 − γ/2 − z`. Paper as
  `pal_score`.

  Args:
    scores_1, scores_2: `[...]` scores of the preferred and the other item.
    loss: `"ce"`, `"hinge"` or `"smooth_hinge"`.
    gamma: smoothing width γ > 0 of `smooth_hinge`.
    where: optional `[...]` bool, valid pairs.
    reduce_fn: `jnp.mean` (over valid pairs), `jnp.sum`, `None` or `sum_and_count`.

  >>> print(pal_loss(jnp.array(-4.), jnp.array(0.), loss="smooth_hinge"))  # 1 − 2.5 + 4
  2.5
  """
  if loss not in _PAL_LOSSES:
    raise ValueError(f"pal_loss: unknown loss {loss!r}; known: {_PAL_LOSSES}.")
  arrays.check_positive("gamma", gamma, where="pal_loss")
  scores_1 = arrays.f32(scores_1)
  arrays.check_shapes("pal_loss", "scores_1", scores_1, scores_2=scores_2, where=where)
  z = scores_1 - arrays.f32(scores_2)
  if loss == "ce":
    values = margin_logistic(z)
  elif loss == "hinge":
    values = jax.nn.relu(1.0 - z)
  else:
    values = jnp.where(z >= 1.0 - gamma, 0.5 / gamma * jnp.square(jax.nn.relu(1.0 - z)),
                       1.0 - 0.5 * gamma - z)
  return arrays.reduce_loss(values, arrays.valid_mask(z, where), reduce_fn)


def pal_prototype_penalty(prototypes: Array, *, bound: float = 4.0, weight: float = 1.0) -> Array:
  """`weight·Σ_k max(0, ‖g_k‖₂ − bound)` over prototypes `[..., K, d]` (bound 4, weight 1)."""
  norms = jnp.sqrt(jnp.sum(jnp.square(arrays.f32(prototypes)), axis=-1) + 1e-30)
  return weight * jnp.sum(jax.nn.relu(norms - bound))


# ------------------------------------------------------------------------------------------------
# GPM: general preference model with a skew-symmetric score.


def gpm_eigenvalues(logits: Array, *, hidden_size: int) -> Array:
  """Prompt-dependent block scales `λ(x) = k·softmax(head(h_x)/√hidden)`, `[..., k]`.

  Args:
    logits: `[..., k]` outputs of the λ head on the prompt's hidden state.
    hidden_size: the model width used in the √hidden temperature.
  """
  logits = arrays.f32(logits)
  return logits.shape[-1] * jax.nn.softmax(logits / math.sqrt(hidden_size), axis=-1)


def _unit(v: Array) -> Array:
  return v / jnp.sqrt(jnp.sum(jnp.square(v), axis=-1, keepdims=True) + 1e-12)


def gpm_score(
    v_i: Array,
    v_j: Array,
    *,
    eigenvalues: Optional[Array] = None,
    normalize: bool = False,
) -> Array:
  r"""GPM preference score `s(y_i ≻ y_j | x) = (R(x) v_i)ᵀ v_j`.

  `R(x) = blockdiag(λ_l(x)·[[0, −1], [1, 0]])` over k blocks, so with `v = (a_1, b_1, …, a_k,
  b_k)`: `s = Σ_l λ_l·(a_{i,l}·b_{j,l} − b_{i,l}·a_{j,l})`; for k = 1, λ = 1:
  `s = v_i[0]·v_j[1] − v_i[1]·v_j[0]`. Skew-symmetric: `s(j ≻ i) = −s(i ≻ j)`, `s(i ≻ i) = 0`,
  and it represents cyclic preferences (three unit vectors 120° apart form a 3-cycle).
  Paper: *General Preference Modeling with Preference Representations for Aligning Language
  Models* (Zhang et al., 2024); code `general-preference/general-preference-model`. The
  training code does not L2-normalise v (default `normalize=False`); the paper's usage example
  does.

  Args:
    v_i, v_j: `[..., 2k]` value-head outputs (last token) of the two responses.
    eigenvalues: optional `[..., k]` block scales λ(x) (`gpm_eigenvalues`); default 1.
    normalize: L2-normalise v_i and v_j first.

  Returns:
    `[...]` scores.

  >>> print(gpm_score(jnp.array([1., 2.]), jnp.array([3., 5.])))  # 1·5 − 2·3
  -1.0
  """
  v_i, v_j = arrays.f32(v_i), arrays.f32(v_j)
  if v_i.ndim < 1 or v_i.shape[-1] % 2 or v_j.ndim < 1 or v_j.shape[-1] != v_i.shape[-1]:
    raise ValueError(f"gpm_score: v_i and v_j must be [..., 2k] with one even last axis; got "
                     f"{v_i.shape} and {v_j.shape}.")
  if normalize:
    v_i, v_j = _unit(v_i), _unit(v_j)
  a_i, b_i = v_i[..., 0::2], v_i[..., 1::2]
  a_j, b_j = v_j[..., 0::2], v_j[..., 1::2]
  blocks = a_i * b_j - b_i * a_j  # [..., k]
  if eigenvalues is not None:
    eigenvalues = arrays.f32(eigenvalues)
    arrays.check_shapes("gpm_score", "the blocks of v_i", blocks, eigenvalues=eigenvalues)
    blocks = blocks * eigenvalues
  return jnp.sum(blocks, axis=-1)


def gpm_temperature(raw) -> Array:
  """Learnable GPM temperature `τ = max(softplus(τ_raw), 1e−2)`."""
  return jnp.maximum(jax.nn.softplus(arrays.f32(raw)), 1e-2)


def gpm_loss(
    v_chosen: Array,
    v_rejected: Array,
    *,
    margin=0.0,
    temperature=1.0,
    eigenvalues: Optional[Array] = None,
    normalize: bool = False,
    where: Optional[Array] = None,
    reduce_fn: arrays.ReduceFn = jnp.mean,
) -> Array:
  r"""GPM preference loss `ℓ = −logσ((s(y_w ≻ y_l) − margin)/τ)`.

  τ = 1 for a 2-dim value head, 0.1 for high-dim heads (value-head dim 4–6); a learnable τ
  enters as `temperature=gpm_temperature(τ_raw)`. Paper and score as `gpm_score`.

  Args:
    v_chosen, v_rejected: `[..., 2k]` value-head outputs of the preferred and the other response.
    margin: scalar or `[...]`.
    temperature: τ > 0 (scalar or traced).
    eigenvalues, normalize: as `gpm_score`.
    where: optional `[...]` bool, valid pairs.
    reduce_fn: `jnp.mean` (over valid pairs), `jnp.sum`, `None` (`[...]`) or `sum_and_count`.

  >>> print(gpm_loss(jnp.array([1., 0.]), jnp.array([0., 1.])))  # s = 1: softplus(−1)
  0.3132...
  """
  arrays.check_positive("temperature", temperature, where="gpm_loss")
  s = gpm_score(v_chosen, v_rejected, eigenvalues=eigenvalues, normalize=normalize)
  arrays.check_shapes("gpm_loss", "the scores", s, margin=margin, where=where)
  values = margin_logistic(s, margin=arrays.f32(margin), temperature=temperature)
  return arrays.reduce_loss(values, arrays.valid_mask(s, where), reduce_fn)


def gpm_regression_loss(
    v_chosen: Array,
    v_rejected: Array,
    *,
    target: float = 10.0,
    temperature=1.0,
    eigenvalues: Optional[Array] = None,
    normalize: bool = False,
    where: Optional[Array] = None,
    reduce_fn: arrays.ReduceFn = jnp.mean,
) -> Array:
  r"""GPM regression variant `ℓ = ½(s(y_w ≻ y_l)/τ − target)²`, target 10.

  >>> print(gpm_regression_loss(jnp.array([1., 0.]), jnp.array([0., 1.])))  # ½(1 − 10)²
  40.5
  """
  arrays.check_positive("temperature", temperature, where="gpm_regression_loss")
  s = gpm_score(v_chosen, v_rejected, eigenvalues=eigenvalues, normalize=normalize)
  values = 0.5 * jnp.square(s / temperature - target)
  return arrays.reduce_loss(values, arrays.valid_mask(s, where), reduce_fn)
