"""Multi-objective rewards and losses: Panacea, DPA and MORE.

- Panacea scalarises M per-objective losses with a preference vector λ on the simplex.
- DPA turns a multi-objective reward `r ∈ R^d` into the scalar `vᵀr` for a unit direction v.
- MORE balances the losses of T preference sources with MGDA min-norm weights.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from alignment import arrays

Array = jax.Array
_NORMALIZATIONS = ("l2", "loss", "loss+", "none")


def _check_simplex(fn_name: str, name: str, value, atol: float = 1e-4) -> None:
  v = arrays.concrete_array(value)
  if v is None:
    return
  v = v.astype(np.float64)
  if (v < -atol).any() or not np.allclose(v.sum(-1), 1.0, atol=atol):
    raise ValueError(f"{fn_name}: {name} must lie on the simplex (non-negative, summing to 1 "
                     f"along the last axis); got {v.tolist() if v.size <= 16 else v.shape}.")


def _objectives(fn_name: str, losses, preference):
  losses = arrays.f32(losses)
  if losses.ndim < 1:
    raise ValueError(f"{fn_name}: losses must be [..., M] (M objectives), got a scalar.")
  arrays.check_shapes(fn_name, "losses", losses, preference=preference)
  _check_simplex(fn_name, "preference", preference)
  return losses, arrays.f32(preference)


def panacea_ls(losses: Array, preference: Array) -> Array:
  r"""Panacea linear scalarisation: `L = Σ_i λ_i·L_i`.

  Paper: *Panacea: Pareto Alignment via Preference Adaptation for LLMs* (Zhong et al., NeurIPS
  2024). The preference vector λ is sampled per step (`sample_preference`) and injected into
  the model; the same λ scalarises the per-objective losses (e.g. per-objective DPO losses).

  Args:
    losses: `[..., M]` per-objective losses `L_i`.
    preference: `[..., M]` (broadcastable) preference vector on the simplex.

  Returns:
    `[...]` scalarised losses.

  >>> print(panacea_ls(jnp.array([1., 3.]), jnp.array([0.25, 0.75])))  # 0.25 + 2.25
  2.5
  """
  losses, preference = _objectives("panacea_ls", losses, preference)
  return jnp.sum(preference * losses, axis=-1)


def panacea_tche(losses: Array, preference: Array, *, ideal_point=0.0) -> Array:
  r"""Panacea Tchebycheff scalarisation: `L = max_i λ_i·(L_i − z_i)`.

  Only the currently worst weighted objective receives gradient, so minimising it reaches every
  Pareto-optimal point (also on non-convex fronts, unlike `panacea_ls`). The ideal point z is 0
  for non-negative losses. Paper: *Panacea: Pareto Alignment via Preference Adaptation for
  LLMs* (Zhong et al., NeurIPS 2024).

  Args:
    losses: `[..., M]` per-objective losses `L_i`.
    preference: `[..., M]` (broadcastable) preference vector on the simplex.
    ideal_point: z, a scalar or `[..., M]`.

  Returns:
    `[...]` scalarised losses.

  >>> print(panacea_tche(jnp.array([1., 3.]), jnp.array([0.75, 0.25])))  # max(0.75, 0.75)
  0.75
  """
  losses, preference = _objectives("panacea_tche", losses, preference)
  arrays.check_shapes("panacea_tche", "losses", losses, ideal_point=ideal_point)
  return jnp.max(preference * (losses - arrays.f32(ideal_point)), axis=-1)


def sample_preference(key: Array, num_objectives: int, *, shape=(),
                      concentration: float = 1.0) -> Array:
  """Preference vectors `[*shape, M]` from a symmetric Dirichlet(α) (α = 1: uniform on Δ^M)."""
  if num_objectives < 1:
    raise ValueError(f"sample_preference: num_objectives must be >= 1, got {num_objectives}.")
  arrays.check_positive("concentration", concentration, where="sample_preference")
  alpha = jnp.full((num_objectives,), concentration, jnp.float32)
  return jax.random.dirichlet(key, alpha, shape=tuple(shape))


# ------------------------------------------------------------------------------------------------
# DPA: directional preference alignment.


def unit_direction(angle_degrees) -> Array:
  """`v = (cos θ, sin θ)`, `[..., 2]`, for θ in degrees (DPA suggests |θ| ≤ 45°)."""
  theta = jnp.deg2rad(arrays.f32(angle_degrees))
  return jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)


def dpa_prompt_weights(direction: Array) -> Array:
  """Integer weights `round(100·v)` `[..., d]` stated in DPA's conditioning system prompt.

  >>> print(dpa_prompt_weights(unit_direction(30.)))  # round(100·(0.866, 0.5))
  [87 50]
  """
  return jnp.round(100.0 * arrays.f32(direction)).astype(jnp.int32)


def _direction(fn_name: str, rewards, direction):
  rewards = arrays.f32(rewards)
  if rewards.ndim < 1:
    raise ValueError(f"{fn_name}: rewards must be [..., d] (d objectives), got a scalar.")
  direction = arrays.f32(direction)
  if direction.ndim < 1 or direction.shape[-1] != rewards.shape[-1]:
    raise ValueError(f"{fn_name}: direction must be [..., {rewards.shape[-1]}] like the last axis "
                     f"of rewards; got shape {direction.shape}.")
  v = arrays.concrete_array(direction)
  if v is not None and not np.allclose(np.linalg.norm(v.astype(np.float64), axis=-1), 1.0,
                                       atol=1e-4):
    raise ValueError(f"{fn_name}: direction must have unit L2 norm along its last axis; got norms "
                     f"{np.linalg.norm(v, axis=-1)}.")
  return rewards, direction


def directional_reward(rewards: Array, direction: Array) -> Array:
  r"""DPA directional reward `R_v(x, y) = vᵀ r(x, y)`, `‖v‖₂ = 1`.

  Paper: *Arithmetic Control of LLMs for Diverse User Preferences: Directional Preference
  Alignment with Multi-Objective Rewards* (Wang et al., ACL 2024); code
  `RLHFlow/Directional-Preference-Alignment`. Usable as the reward of a GRPO/RL loop, or to pick
  the best of N samples (`directional_best`) for rejection-sampling fine-tuning.

  Args:
    rewards: `[..., d]` multi-objective rewards.
    direction: unit vector(s) v, broadcastable `[..., d]`.

  Returns:
    `[...]` scalar rewards.

  >>> print(directional_reward(jnp.array([2., 4.]), jnp.array([0.6, 0.8])))  # 1.2 + 3.2
  4.4
  """
  rewards, direction = _direction("directional_reward", rewards, direction)
  return jnp.sum(rewards * direction, axis=-1)


def directional_best(rewards: Array, direction: Array, *,
                     where: Optional[Array] = None) -> Array:
  """Index `[...]` of the best of N responses, `argmax_n vᵀ r[..., n, :]` (DPA rejection sampling).

  Args:
    rewards: `[..., N, d]` rewards of N sampled responses.
    direction: unit vector(s) v, broadcastable to `[..., d]` (one per prompt).
    where: optional `[..., N]` bool, valid responses (invalid ones are never picked).
  """
  if jnp.ndim(rewards) < 2:
    raise ValueError("directional_best: rewards must be [..., N, d].")
  direction = arrays.f32(direction)
  scores = directional_reward(rewards, direction[..., None, :] if direction.ndim > 1 else direction)
  valid = arrays.valid_mask(scores, where)
  return jnp.argmax(jnp.where(valid, scores, -jnp.inf), axis=-1)


# ------------------------------------------------------------------------------------------------
# MORE: MGDA-balanced multi-source reward learning.


def _flatten_tasks(task_grads: Any) -> Array:
  leaves = jax.tree_util.tree_leaves(task_grads)
  if not leaves:
    raise ValueError("more_weights: task_grads is empty.")
  num_tasks = jnp.shape(leaves[0])[0] if jnp.ndim(leaves[0]) else 0
  if num_tasks < 1 or any(jnp.ndim(x) < 1 or jnp.shape(x)[0] != num_tasks for x in leaves):
    raise ValueError("more_weights: every leaf of task_grads must have the same leading task axis "
                     f"T >= 1; got shapes {[jnp.shape(x) for x in leaves]}.")
  return jnp.concatenate([arrays.f32(x).reshape(num_tasks, -1) for x in leaves], axis=-1)


def more_weights(
    task_grads: Any,
    *,
    task_losses: Optional[Array] = None,
    normalization: str = "l2",
    max_iter: int = 250,
    tol: float = 1e-5,
) -> Array:
  r"""MGDA min-norm task weights of MORE: `λ = argmin_{λ ∈ Δ^T} ‖Σ_t λ_t ĝ_t‖²`.

  Paper: *On Diversified Preferences of Large Language Model Alignment* (Zeng et al.); code
  `dunzeng/MORE` (`trainer.py`, `min_norm_solvers.py`, after *Multi-Task Learning as
  Multi-Objective Optimization*, Sener & Koltun, NeurIPS 2018). `g_t` is the gradient of source
  t's loss with respect to the **reward-head weights only**, normalised first:
  `ĝ_t = g_t / n_t` with `n_t = ‖g_t‖₂` (`"l2"`, default), `L_t` (`"loss"`), `L_t·‖g_t‖₂`
  (`"loss+"`) or 1 (`"none"`). Frank–Wolfe on the Gram matrix `G = ĝ ĝᵀ`, from the
  min-norm point of the best pair of tasks (as MGDA's solver): `t* = argmin_t (Gλ)_t`, exact
  line search `γ = clip((G_{t*t*} − (Gλ)_{t*}) / (λᵀGλ + G_{t*t*} − 2(Gλ)_{t*}), 0, 1)`,
  `λ ← γλ + (1 − γ)e_{t*}`, until `Σ|Δλ| < tol` or `max_iter` steps (plain Frank–Wolfe
  converges sublinearly when the optimum is interior: at the defaults `‖Σλĝ‖²` can be ~0.1 %
  above its minimum). Returned under stop-gradient; combine with `more_loss`.

  Args:
    task_grads: `[T, D]` array, or a pytree whose leaves all have a leading task axis T.
    task_losses: `[T]` losses, needed by `"loss"` and `"loss+"`.
    normalization: `"l2"`, `"loss"`, `"loss+"` or `"none"`.
    max_iter: Frank–Wolfe iterations (MGDA's 250).
    tol: stopping threshold on the L1 change of λ (MGDA's 1e−5).

  Returns:
    `[T]` weights on the simplex.

  >>> w = more_weights(jnp.array([[1., 0.], [0., 2.]]), normalization="none")
  >>> print([round(float(x), 4) for x in w])  # min λ² + 4(1 − λ)²: λ = 4/5
  [0.8, 0.2]
  """
  if normalization not in _NORMALIZATIONS:
    raise ValueError(f"more_weights: unknown normalization {normalization!r}; known: "
                     f"{_NORMALIZATIONS}.")
  g = _flatten_tasks(task_grads)
  norms = jnp.sqrt(jnp.sum(jnp.square(g), axis=-1))
  if normalization in ("loss", "loss+"):
    if task_losses is None:
      raise ValueError(f"more_weights: normalization={normalization!r} needs task_losses [T].")
    task_losses = arrays.f32(task_losses)
    if task_losses.shape != norms.shape:
      raise ValueError(f"more_weights: task_losses must have shape {norms.shape}, got "
                       f"{task_losses.shape}.")
  scale = {"l2": lambda: norms, "none": lambda: jnp.ones_like(norms),
           "loss": lambda: task_losses, "loss+": lambda: task_losses * norms}[normalization]()
  g = g / jnp.where(scale > 0, scale, 1.0)[:, None]
  return jax.lax.stop_gradient(_min_norm_frank_wolfe(g @ g.T, max_iter, tol))


def _min_norm_frank_wolfe(gram: Array, max_iter: int, tol: float) -> Array:
  """Frank–Wolfe for `min_{λ ∈ Δ} λᵀGλ` (see `more_weights`)."""
  num_tasks = gram.shape[0]

  def step(_, carry):
    lam, done = carry
    g_lam = gram @ lam
    t = jnp.argmin(g_lam)
    gamma, _ = _line_search(lam @ g_lam, g_lam[t], gram[t, t])
    new = gamma * lam + (1.0 - gamma) * jax.nn.one_hot(t, num_tasks, dtype=lam.dtype)
    converged = jnp.sum(jnp.abs(new - lam)) < tol
    return jnp.where(done, lam, new), done | converged

  if num_tasks == 1:
    return jnp.ones((1,), jnp.float32)
  lam, _ = jax.lax.fori_loop(0, max_iter, step, (_best_pair(gram), jnp.asarray(False)))
  return lam


def _line_search(v1v1, v1v2, v2v2):
  """`(γ, cost)`: `γ = argmin_{γ ∈ [0, 1]} ‖γ v1 + (1 − γ) v2‖²` from the three inner products."""
  denom = v1v1 + v2v2 - 2.0 * v1v2
  ok = denom > 1e-12
  gamma = jnp.where(ok, jnp.clip((v2v2 - v1v2) / jnp.where(ok, denom, 1.0), 0.0, 1.0), 1.0)
  return gamma, gamma * gamma * v1v1 + 2.0 * gamma * (1.0 - gamma) * v1v2 + (
      1.0 - gamma) ** 2 * v2v2


def _best_pair(gram: Array) -> Array:
  """MGDA's start: the min-norm point of the best pair of tasks, as weights `[T]`."""
  num_tasks = gram.shape[0]
  diag = jnp.diag(gram)
  gamma, cost = _line_search(diag[:, None], gram, diag[None, :])  # [T, T]: pair (i, j)
  cost = jnp.where(jnp.eye(num_tasks, dtype=bool), jnp.inf, cost)
  i, j = jnp.unravel_index(jnp.argmin(cost), cost.shape)
  return jnp.zeros((num_tasks,), jnp.float32).at[i].add(gamma[i, j]).at[j].add(1.0 - gamma[i, j])


def more_loss(task_losses: Array, task_weights: Array) -> Array:
  r"""MORE's batch loss `T·Σ_t sg(λ_t)·L_t` (weights from `more_weights`, rescaled by T tasks).

  >>> print(more_loss(jnp.array([1., 3.]), jnp.array([0.5, 0.5])))  # 2·(0.5 + 1.5)
  4.0
  """
  task_losses = arrays.f32(task_losses)
  arrays.check_shapes("more_loss", "task_losses", task_losses, task_weights=task_weights)
  lam = jax.lax.stop_gradient(arrays.f32(task_weights))
  return task_losses.shape[-1] * jnp.sum(lam * task_losses, axis=-1)
