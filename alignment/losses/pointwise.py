"""Pointwise, unpaired and binary-feedback objectives.

Every objective here scores each response on its own: inputs `logps, ref_logps, labels` are
`[..., K]` (K = 1 for plain unpaired data; all leading axes are batch axes), `where` masks
padded slots and `reduce_fn=jnp.mean` is one mean over all valid responses of the whole input.
Binary labels: 1 (or True) = desirable / positive, 0 = undesirable / negative; concrete labels
outside {0, 1} raise.

This module also holds the helpers that the pairwise and reference-free modules share with it:
the RunningMoments recurrence of both BCO forms and the rescaling that writes a mean over a
subset (or a token mean) as per-example values.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from alignment import scores
from alignment import arrays
from alignment.losses.registry import register

Array = jax.Array
_sg = jax.lax.stop_gradient


# ------------------------------------------------------------------------------------------------
# Shared helpers.


class RunningMoments(NamedTuple):
  """State of BCO's running reward moments (a pytree of float32 scalars).

  Attributes:
    mean: μ, the running mean (BCO's δ).
    var: v, the running population variance.
    count: c, the number of values seen (starts at 1e−24, as in TRL).
  """

  mean: Array
  var: Array
  count: Array


def running_moments_init() -> RunningMoments:
  """Initial state `μ = 0, v = 1, c = 1e−24`."""
  return RunningMoments(
      mean=jnp.zeros((), jnp.float32),
      var=jnp.ones((), jnp.float32),
      count=jnp.full((), 1e-24, jnp.float32),
  )


def running_moments_update(state: RunningMoments, values, mask=None) -> RunningMoments:
  """Merges a batch of values into the running moments (parallel-variance recurrence).

  With batch mean `μ_b`, population variance `v_b` and size `n` (valid entries only):
  `d = μ_b − μ`, `c' = c + n`, `v' = (v·c + d²·c·n/c' + v_b·n)/c'`, `μ' = μ + d·n/c'`.
  An empty batch (`n = 0`) leaves the state unchanged. Values are stop-gradient.

  Args:
    state: current `RunningMoments`.
    values: any shape; all entries are one batch.
    mask: valid entries (default all).

  Returns:
    The new `RunningMoments`.
  """
  values = _sg(arrays.f32(values))
  mask = arrays.valid_mask(values, mask)
  n = jnp.sum(mask, dtype=jnp.float32)
  batch_mean = arrays.masked_mean(values, mask)
  batch_var = arrays.masked_mean(jnp.square(values - batch_mean), mask)
  mean, var, count = (arrays.f32(x) for x in state)
  d = batch_mean - mean
  new_count = count + n
  new_var = (var * count + d * d * count * n / new_count + batch_var * n) / new_count
  return RunningMoments(mean=mean + d * n / new_count, var=new_var, count=new_count)


def _binary_labels(name: str, labels, valid) -> Array:
  """Desirable mask from labels in {0, 1}; concrete labels (and masks) are checked."""
  if labels is None:
    raise ValueError(f"{name}: `labels` (1 desirable, 0 undesirable) is required.")
  try:
    concrete = np.asarray(labels, np.float64)
    mask = np.broadcast_to(np.asarray(valid, bool), concrete.shape)
  except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    concrete = None  # traced inside jit/grad/vmap: cannot be inspected
  if concrete is not None:
    bad = mask & (concrete != 0.0) & (concrete != 1.0)
    if bad.any():
      raise ValueError(
          f"{name}: labels must be 0 (undesirable) or 1 (desirable); got {concrete[bad][0]} at "
          f"index {tuple(int(i) for i in np.argwhere(bad)[0])}."
      )
  return arrays.f32(labels) > 0.5


def _prepare(name, logps, ref_logps, labels, where, weights, beta, *, lengths=None):
  """Checks shapes and β; returns the valid mask and the per-item weights."""
  arrays.check_positive("beta", beta, where=name)
  arrays.check_shapes(
      name, "logps", logps, ref_logps=ref_logps, labels=labels, where=where, weights=weights,
      lengths=lengths,
  )
  if ref_logps is None:
    raise ValueError(f"{name}: `ref_logps` is required.")
  valid = arrays.valid_mask(logps, where)
  w = 1.0 if weights is None else arrays.as_float(weights)
  return valid, w


# ------------------------------------------------------------------------------------------------
# KTO.


def rotate_completions(x, *, axis: int = 0) -> Array:
  """KTO's mismatched completions: prompt i gets completion i−1 (cyclically) along `axis`.

  Apply it to the completion arrays before the extra forward that yields `kl_logps`.
  """
  return jnp.roll(x, 1, axis=axis)


def kto_reference_point(kl_logps, kl_ref_logps, *, where=None) -> Array:
  """KTO's `z0 = max(0, mean(lp(y'|x) − lr(y'|x)))` over the mismatched pairs, stop-gradient.

  Args:
    kl_logps, kl_ref_logps: `[..., K]` log-probs of the mismatched (prompt, completion) pairs.
    where: valid entries (default all).

  Returns:
    Scalar z0 (mean over the whole input = the global batch under `jit`).
  """
  rho = scores.log_ratio(kl_logps, kl_ref_logps)
  return _sg(jnp.maximum(arrays.masked_mean(rho, arrays.valid_mask(rho, where)), 0.0))


def kto(
    logps, ref_logps, labels, *, kl_logps, kl_ref_logps, lengths=None, where=None, weights=None,
    beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
    reduce_fn=jnp.mean,
):
  """KTO: prospect-theoretic value of the implicit reward relative to the batch KL `z0`.

  `ρ = lp − lr`; desirable `ℓ = λ_D·(1 − σ(β(ρ − z0)))`, undesirable `ℓ = λ_U·(1 − σ(β(z0 −
  ρ)))`; one mean over all valid examples. `z0 = max(0, mean(kl_logps − kl_ref_logps))`
  (stop-gradient) comes from the mismatched pairs (`rotate_completions`).

  Paper: "KTO: Model Alignment as Prospect Theoretic Optimization" (Ethayarajh et al., 2024);
  code ContextualAI/HALOs. Needs a batch of at least 2 with both labels for a meaningful z0.

  Args:
    logps, ref_logps, labels: `[..., K]`; labels 1 desirable, 0 undesirable.
    kl_logps, kl_ref_logps: `[..., K]` log-probs of the mismatched pairs (their `where` = ours).
    lengths: unused (uniform signature).
    where, weights: `[..., K]` validity and per-example weights (multiply).
    beta: β (0.1). desirable_weight, undesirable_weight: λ_D, λ_U (1.0).
    reduce_fn: reduction (`docs/conventions.md`).

  Returns:
    The reduced loss (`[..., K]` with `reduce_fn=None`).
  """
  name = "kto"
  del lengths
  valid, w = _prepare(name, logps, ref_logps, labels, where, weights, beta)
  arrays.check_shapes(name, "logps", logps, kl_logps=kl_logps, kl_ref_logps=kl_ref_logps)
  arrays.check_range("desirable_weight", desirable_weight, low=0.0, where=name)
  arrays.check_range("undesirable_weight", undesirable_weight, low=0.0, where=name)
  desirable = _binary_labels(name, labels, valid)
  z0 = kto_reference_point(kl_logps, kl_ref_logps, where=where)
  rho = scores.log_ratio(logps, ref_logps)
  loss = jnp.where(
      desirable,
      desirable_weight * (1.0 - jax.nn.sigmoid(beta * (rho - z0))),
      undesirable_weight * (1.0 - jax.nn.sigmoid(beta * (z0 - rho))),
  )
  return arrays.reduce_loss(loss * w, valid, reduce_fn)


def apo_zero_unpaired(
    logps, ref_logps, labels, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    reduce_fn=jnp.mean,
):
  """APO-zero for unpaired data: desirable `1 − σ(βρ)`, undesirable `σ(βρ)`, `ρ = lp − lr`.

  Paper: "Anchored Preference Optimization and Contrastive Revisions: Addressing
  Underspecification in Alignment" (D'Oosterlinck et al., 2024).

  Args:
    logps, ref_logps, labels, where, weights: `[..., K]`; labels 1 desirable, 0 undesirable.
    beta: β (0.1).
  """
  name = "apo_zero_unpaired"
  del lengths
  valid, w = _prepare(name, logps, ref_logps, labels, where, weights, beta)
  desirable = _binary_labels(name, labels, valid)
  z = beta * scores.log_ratio(logps, ref_logps)
  loss = jnp.where(desirable, 1.0 - jax.nn.sigmoid(z), jax.nn.sigmoid(z))
  return arrays.reduce_loss(loss * w, valid, reduce_fn)


# ------------------------------------------------------------------------------------------------
# BCO.


def _bco_class_mean_value(rewards, desirable, valid):
  """`½(mean r_D + mean r_U)` (or the one present class mean) as one value, and its validity."""
  d, u = desirable & valid, ~desirable & valid
  has_d, has_u = jnp.any(d), jnp.any(u)
  mean_d = arrays.masked_mean(rewards, d)
  mean_u = arrays.masked_mean(rewards, u)
  both = has_d & has_u
  value = jnp.where(both, 0.5 * (mean_d + mean_u), mean_d + mean_u)
  return value, has_d | has_u


def bco(
    logps, ref_logps, labels, *, state: Optional[RunningMoments] = None, training: bool = True,
    udm_weights=None, delta: str = "pooled", lengths=None, where=None, weights=None,
    beta: float = 0.1, reduce_fn=jnp.mean,
):
  """BCO (unpaired): binary classification with the implicit reward shifted by a running mean.

  `r = β(lp − lr)`; on training steps the RunningMoments state is first updated with all valid
  rewards of the batch, then `δ = μ` (stop-gradient);
  `L = mean(concat(−logσ(r_D − δ), w_udm·(−logσ(−(r_U − δ)))))`.
  `delta="pooled"` (TRL, default) feeds all rewards; `delta="class_mean"` feeds the single value
  `½(mean r_D + mean r_U)` (project choice for the paper's unverified variant).

  Paper: "Binary Classifier Optimization for Large Language Model Alignment" (Jung et al., 2024).

  Args:
    logps, ref_logps, labels, where, weights: `[..., K]`; labels 1 desirable, 0 undesirable.
    state: `RunningMoments` (None = `running_moments_init()`).
    training: update the state (evaluation steps pass False and get the state back unchanged).
    udm_weights: optional `[..., K]` density-ratio weights of undesirable examples (data,
      stop-gradient; desirable examples ignore them).
    delta: "pooled" or "class_mean".
    beta: β (0.1).

  Returns:
    `(loss, new_state)`.
  """
  name = "bco"
  del lengths
  if delta not in ("pooled", "class_mean"):
    raise ValueError(f"{name}: delta must be 'pooled' or 'class_mean', got {delta!r}.")
  valid, w = _prepare(name, logps, ref_logps, labels, where, weights, beta)
  arrays.check_shapes(name, "logps", logps, udm_weights=udm_weights)
  desirable = _binary_labels(name, labels, valid)
  state = running_moments_init() if state is None else state
  rewards = beta * scores.log_ratio(logps, ref_logps)
  if training:
    if delta == "pooled":
      state = running_moments_update(state, rewards, valid)
    else:
      value, present = _bco_class_mean_value(rewards, desirable, valid)
      state = running_moments_update(state, value, present)
  shift = _sg(state.mean)
  udm = 1.0 if udm_weights is None else _sg(arrays.as_float(udm_weights))
  loss = jnp.where(
      desirable,
      -jax.nn.log_sigmoid(rewards - shift),
      -udm * jax.nn.log_sigmoid(-(rewards - shift)),
  )
  return arrays.reduce_loss(loss * w, valid, reduce_fn), state


# ------------------------------------------------------------------------------------------------
# ULMA and point-wise DPO.

_ULMA_POSITIVE = ("logloss", "beta_logloss", "pointwise_dpo", "shifted_ce_loss")
_ULMA_NEGATIVE = ("binary", "continuous")


def ulma(
    logps, ref_logps, labels, *, lengths, where=None, weights=None, beta: float = 0.1,
    z: float = 0.0, positive_loss: str = "logloss", negative_loss: str = "binary",
    reduce_fn=jnp.mean,
):
  """ULMA: an SFT-style term on positives plus a point-wise DPO term on negatives.

  Average log-probs `a = lp/n`, `ρ̄ = a − a_ref`; positive ⇔ `label == 1`.
  `L = L_pos + L_neg`, each a mean over its own subset (an empty subset contributes 0):
  - `positive_loss`: "logloss" (default) `−mean a`; "beta_logloss" `−β·mean a`;
    "pointwise_dpo" `mean −logσ(βρ̄ + z)`; "shifted_ce_loss" token-mean NLL `−Σlp/Σn`.
  - `negative_loss`: "binary" (default) `mean −logσ(−βρ̄ − z)`; "continuous"
    `mean (label − βρ̄ − z)²` (labels are scores in [0, 1)).

  Paper: "ULMA: Unified Language Model Alignment with Demonstration and Point-wise Human
  Preference"; code Unified-Language-Model-Alignment/src (`ulma/trainer.py`).

  Args:
    logps, ref_logps, labels, lengths, where, weights: `[..., K]`.
    beta: β (0.1). z: stand-in for `β·log Z(x)` (0).
    reduce_fn: reduction. The unreduced values carry each term's subset mean as per-example
      shares (`arrays.as_mean_over`), so their mean over valid examples is `L`.
  """
  name = "ulma"
  arrays.check_choice("positive_loss", positive_loss, _ULMA_POSITIVE, where=name)
  arrays.check_choice("negative_loss", negative_loss, _ULMA_NEGATIVE, where=name)
  valid, w = _prepare(name, logps, ref_logps, labels, where, weights, beta, lengths=lengths)
  if labels is None:
    raise ValueError(f"{name}: `labels` (1 positive, otherwise negative) is required.")
  label_values = arrays.as_float(labels)
  positive = label_values == 1.0
  if negative_loss == "binary":
    _binary_labels(name, labels, valid)
  n = jnp.maximum(arrays.as_float(lengths), 1.0)
  a = scores.average_logprob(logps, lengths)
  rho = scores.length_normalized_log_ratio(logps, ref_logps, lengths)
  if positive_loss == "logloss":
    pos = -a
  elif positive_loss == "beta_logloss":
    pos = -beta * a
  elif positive_loss == "pointwise_dpo":
    pos = -jax.nn.log_sigmoid(beta * rho + z)
  else:  # shifted_ce_loss: the token mean −Σlp/Σn over positives.
    pos = -arrays.as_float(logps)
  if negative_loss == "binary":
    neg = -jax.nn.log_sigmoid(-beta * rho - z)
  else:
    neg = jnp.square(label_values - beta * rho - z)
  pos_mask, neg_mask = positive & valid, ~positive & valid
  pos_denominator = (
      jnp.sum(jnp.where(pos_mask, n, 0.0)) if positive_loss == "shifted_ce_loss"
      else jnp.sum(pos_mask)
  )
  loss = arrays.as_mean_over(pos * w, pos_mask, valid, pos_denominator) + arrays.as_mean_over(
      neg * w, neg_mask, valid, jnp.sum(neg_mask)
  )
  return arrays.reduce_loss(loss, valid, reduce_fn)


def pointwise_dpo(
    logps, ref_logps, labels, *, lengths, where=None, weights=None, beta: float = 0.1,
    z: float = 0.0, reduce_fn=jnp.mean,
):
  """Point-wise DPO: `mean_pos −logσ(βρ̄ + z) + mean_neg −logσ(−βρ̄ − z)`, `ρ̄ = a − a_ref`.

  ULMA's baseline (= `ulma(positive_loss="pointwise_dpo")`). Paper: "ULMA: Unified Language
  Model Alignment with Demonstration and Point-wise Human Preference".
  """
  return ulma(
      logps, ref_logps, labels, lengths=lengths, where=where, weights=weights, beta=beta, z=z,
      positive_loss="pointwise_dpo", reduce_fn=reduce_fn,
  )


# ------------------------------------------------------------------------------------------------
# D2O.


def d2o(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    alpha: float = 0.1, reduce_fn=jnp.mean,
):
  """D2O: contrast human negatives with the policy's own samples.

  `ℓ = −logσ( β·mean_{self} ρ_i − α·mean_{neg} ρ )` per list, where the valid slots with label 1
  are the K self-generated responses and those with label 0 the human negative(s) (normally
  one, so the second mean is `ρ_l`). `ref_logps` per slot lets the self-generated terms use
  π_r⁻ and the negative π_r⁺. `labels=None` means slot 0 is the negative, slots 1.. the samples.

  Paper: "Negating Negatives: Alignment with Human Negative Samples via Distributional
  Dispreference Optimization" (Duan et al., 2024). Defaults β = 0.1, α = 0.1 (third-party code
  agentsea/dark.rl; the paper's K = 11).

  Args:
    logps, ref_logps, labels, where: `[..., 1 + K]`.
    weights: `[..., 1 + K]`; the weight of the list is taken from its negative slot(s) mean.
    beta, alpha: β and α.

  Returns:
    The mean over lists with at least one sample and one negative (`[...]` with `None`).
  """
  name = "d2o"
  del lengths
  arrays.check_positive("alpha", alpha, where=name)
  if labels is None:
    labels = jnp.zeros(jnp.shape(logps)).at[..., 1:].set(1.0)
  valid, w = _prepare(name, logps, ref_logps, labels, where, weights, beta)
  samples = _binary_labels(name, labels, valid) & valid
  negatives = ~samples & valid
  rho = scores.log_ratio(logps, ref_logps)
  logit = beta * arrays.masked_mean(rho, samples, axis=-1) - alpha * arrays.masked_mean(
      rho, negatives, axis=-1
  )
  list_weight = 1.0 if weights is None else arrays.masked_mean(
      jnp.broadcast_to(w, jnp.shape(rho)), negatives, axis=-1
  )
  list_valid = jnp.any(samples, axis=-1) & jnp.any(negatives, axis=-1)
  return arrays.reduce_loss(-jax.nn.log_sigmoid(logit) * list_weight, list_valid, reduce_fn)


# ------------------------------------------------------------------------------------------------
# Pointwise sigmoid.


def pointwise_sigmoid(
    logps, ref_logps, labels, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    reduce_fn=jnp.mean,
):
  """Per-item binary cross-entropy: `ℓ_i = −[y_i·logσ(s_i) + (1 − y_i)·logσ(−s_i)]`, `s = βρ`.

  The pointwise member of LiPO's table (Rax `pointwise_sigmoid_loss`). Labels must lie in [0, 1]
  (rescale graded labels explicitly; concrete out-of-range labels raise).

  Args:
    logps, ref_logps, labels, where, weights: `[..., K]`.
    beta: β (0.1).
  """
  name = "pointwise_sigmoid"
  del lengths
  valid, w = _prepare(name, logps, ref_logps, labels, where, weights, beta)
  arrays.check_array_range("labels", labels, low=0.0, high=1.0, mask=valid, where=name)
  y = arrays.as_float(labels)
  s = beta * scores.log_ratio(logps, ref_logps)
  loss = -(y * jax.nn.log_sigmoid(s) + (1.0 - y) * jax.nn.log_sigmoid(-s))
  return arrays.reduce_loss(loss * w, valid, reduce_fn)


# ------------------------------------------------------------------------------------------------
# Registry.

_BCO_PAPER = "Binary Classifier Optimization for Large Language Model Alignment (Jung et al., 2024)"
_ULMA_PAPER = (
    "ULMA: Unified Language Model Alignment with Demonstration and Point-wise Human Preference"
)

register(
    "kto", fn=kto, family="pointwise", extra_inputs=("kl_logps", "kl_ref_logps"),
    paper="KTO: Model Alignment as Prospect Theoretic Optimization (Ethayarajh et al., 2024); "
    "code ContextualAI/HALOs",
)
register(
    "apo_zero_unpaired", fn=apo_zero_unpaired, family="pointwise",
    paper="Anchored Preference Optimization and Contrastive Revisions (D'Oosterlinck et al., 2024)",
)
register(
    "bco", fn=bco, family="pointwise", stateful=True, init_state=running_moments_init,
    paper=_BCO_PAPER,
)
register("ulma", fn=ulma, family="pointwise", needs_lengths=True, paper=_ULMA_PAPER)
register("pointwise_dpo", fn=pointwise_dpo, family="pointwise", needs_lengths=True,
         paper=_ULMA_PAPER)
register(
    "d2o", fn=d2o, family="pointwise",
    paper="Negating Negatives: Alignment with Human Negative Samples via Distributional "
    "Dispreference Optimization (Duan et al., 2024)",
)
register(
    "pointwise_sigmoid", fn=pointwise_sigmoid, family="pointwise",
    paper="LiPO: Listwise Preference Optimization through Learning-to-Rank (Liu et al., 2024); "
    "Rax pointwise_sigmoid_loss",
)
