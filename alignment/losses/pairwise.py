"""Pairwise (margin) preference objectives.

Every objective takes `logps, ref_logps, labels` of shape `[..., 2]` (all leading axes are batch
axes) with slot 0 the chosen response `y_w` and slot 1 the rejected `y_l`;
`pair_to_list(chosen, rejected)` builds that layout and the labels `[1, 0]`.

How labels are used (consistent with `arrays.pair_mask`): a pair exists iff its two labels are
strictly ordered and both slots are valid under `where`; the slot with the higher label is the
chosen one, so swapped layouts (`labels = [0, 1]`) are ordered by the labels, and a pair whose
labels tie contributes nothing (it is masked like padding). `labels=None` means `[1, 0]`. Per-item
`weights` attach to the chosen item (`docs/conventions.md`), so weights `[..., 2]` act through the
slot that the labels make the chosen one.

Reduction (`docs/conventions.md`): `reduce_fn=jnp.mean` is the mean over valid pairs of the whole
input (the DPO batch mean); `None` returns `[...]` per-pair values with invalid pairs set to 0.

Scores: the objectives that allow it take `fdiv=` (f-divergence scores, `scores.fdiv_transform`):
each log-ratio ρ is replaced by `s(ρ)` and `Δ = s_w − s_l` replaces the DPO logit `h`
(`"reverse_kl"` = plain DPO). WPO enters as `weights=scores.wpo_weights(...)`, LD-DPO as inputs from
`scores.ld_dpo_logps(...)`.
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from alignment import scores
from alignment import arrays
from alignment.losses.pointwise import RunningMoments, running_moments_init, running_moments_update
from alignment.losses.registry import get, register, spec

Array = jax.Array
_log_sigmoid = jax.nn.log_sigmoid


def pair_to_list(chosen, rejected) -> tuple[Array, Array]:
  """Builds the pairwise layout: `(stack([chosen, rejected], -1), labels [..., 2] = [1, 0])`.

  Args:
    chosen, rejected: `[...]` per-example values (log-probs, lengths, ...).

  Returns:
    `(x [..., 2], labels [..., 2])` with slot 0 chosen.
  """
  x = jnp.stack([jnp.asarray(chosen), jnp.asarray(rejected)], axis=-1)
  labels = jnp.broadcast_to(jnp.asarray([1.0, 0.0], jnp.float32), x.shape)
  return x, labels


# ------------------------------------------------------------------------------------------------
# Terms shared with the reference-free objectives.


def smoothed_logistic(z, label_smoothing) -> Array:
  """`−(1−ε)·logσ(z) − ε·logσ(−z)`: cDPO's smoothed Bradley–Terry likelihood of a margin z.

  Paper: "A note on DPO with noisy preferences & relationship to IPO" (Mitchell, 2023).
  """
  return -(1.0 - label_smoothing) * _log_sigmoid(z) - label_smoothing * _log_sigmoid(-z)


def check_label_smoothing(fn_name: str, value, high: float = 0.5) -> None:
  """`label_smoothing` ε ∈ [0, high) (cDPO and rDPO are undefined at ε = 1/2)."""
  arrays.check_range(
      "label_smoothing", value, low=0.0, high=high, high_inclusive=False, where=fn_name
  )


def chosen_nll(logps, lengths, pairs: arrays.Pairs) -> Array:
  """Token-mean NLL of the chosen responses, `−Σ lp_w / Σ n_w` over the valid pairs.

  Returned as per-pair shares (`arrays.as_mean_over`): their mean over the valid pairs is that
  scalar, so the term obeys any `reduce_fn` like a per-pair loss.
  """
  lp_w, _ = arrays.chosen_rejected(arrays.as_float(logps), pairs.swap)
  n_w, _ = arrays.chosen_rejected(jnp.maximum(arrays.as_float(lengths), 1.0), pairs.swap)
  tokens = jnp.sum(jnp.where(pairs.valid, n_w, 0.0))
  return arrays.as_mean_over(-lp_w, pairs.valid, pairs.valid, tokens)


# ------------------------------------------------------------------------------------------------
# Private helpers.


def _margin_scores(name, logps, ref_logps, lengths, pairs, fdiv, *, normalize=False, gamma=1.0):
  """`(s_w, s_l)`: f-divergence scores of the (optionally length-normalised) log-ratios.

  The per-slot ratio is `lp − γ·lr` (γ = 1: ρ; DPO^γ otherwise), divided by `max(n, 1)` when
  `normalize`; then `s = fdiv(ratio)`.
  """
  arrays.require(name, ref_logps, "ref_logps")
  ratio = scores.dpo_gamma_log_ratio(logps, ref_logps, gamma=gamma)
  if normalize:
    arrays.require(name, lengths, "lengths")
    ratio = ratio / jnp.maximum(arrays.as_float(lengths), 1.0)
  return arrays.chosen_rejected(scores.fdiv_transform(fdiv)(ratio), pairs.swap)


def _raw_log_ratios(name, logps, ref_logps, pairs):
  arrays.require(name, ref_logps, "ref_logps")
  return arrays.chosen_rejected(scores.log_ratio(logps, ref_logps), pairs.swap)


# ------------------------------------------------------------------------------------------------
# DPO, cDPO, rDPO.


def dpo(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    label_smoothing: float = 0.0, fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """DPO: `ℓ = −(1−ε)·logσ(β·h) − ε·logσ(−β·h)`, `h = (lp_w − lp_l) − (lr_w − lr_l)`.

  With ε = `label_smoothing` = 0 (default) this is DPO; ε > 0 is cDPO. K = 2 reduction
  (`docs/conventions.md`): pairwise logistic, ListMLE and softmax losses on scores `βρ` equal this
  loss.

  Paper: "Direct Preference Optimization: Your Language Model is Secretly a Reward Model"
  (Rafailov et al., 2023); code eric-mitchell/direct-preference-optimization.

  Args:
    logps, ref_logps, labels, where, weights: `[..., 2]`, slot 0 chosen (see module doc).
    lengths: unused (uniform signature).
    beta: β (0.1). label_smoothing: ε in [0, 0.5). fdiv: score transform
      (`scores.fdiv_transform`).
    reduce_fn: `jnp.mean` (mean over valid pairs), `jnp.sum`, `None`, `sum_and_count`.

  Returns:
    The reduced loss, or `[...]` per-pair values for `reduce_fn=None`.

  Example:
    >>> import jax.numpy as jnp
    >>> from alignment.losses import pairwise
    >>> round(float(pairwise.dpo(jnp.array([-1.0, -2.0]), jnp.array([-1.0, -2.0]))), 4)  # ln 2
    0.6931
  """
  name = "dpo"
  arrays.check_positive("beta", beta, where=name)
  check_label_smoothing(name, label_smoothing)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  s_w, s_l = _margin_scores(name, logps, ref_logps, lengths, pairs, fdiv)
  loss = smoothed_logistic(beta * (s_w - s_l), label_smoothing)
  return arrays.reduce_pairs(loss, pairs, reduce_fn)


def cdpo(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    label_smoothing: float = 0.0, fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """cDPO: `ℓ = −(1−ε)·logσ(βh) − ε·logσ(−βh)`, ε ∈ [0, 0.5) (default 0 = DPO).

  Finite minimiser `h* = logit(1−ε)/β`. Same function as `dpo(label_smoothing=ε)`.

  Paper: "A note on DPO with noisy preferences & relationship to IPO" (Mitchell, 2023).
  """
  check_label_smoothing("cdpo", label_smoothing)
  return dpo(
      logps, ref_logps, labels, lengths=lengths, where=where, weights=weights, beta=beta,
      label_smoothing=label_smoothing, fdiv=fdiv, reduce_fn=reduce_fn,
  )


def rdpo(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    label_smoothing: float = 0.1, fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """Robust DPO: `ℓ = [−(1−ε)·logσ(βh) + ε·logσ(−βh)] / (1 − 2ε)`, ε ∈ [0, 0.5) (0.1).

  An unbiased estimate of the clean DPO loss under label flips of known rate ε (raises unless
  `0 ≤ ε < 0.5`). Unbounded below: use few epochs / early stopping.

  Paper: "Provably Robust DPO: Aligning Language Models with Noisy Feedback" (Chowdhury, Kini,
  Natarajan, ICML 2024).
  """
  name = "rdpo"
  arrays.check_positive("beta", beta, where=name)
  check_label_smoothing(name, label_smoothing)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  s_w, s_l = _margin_scores(name, logps, ref_logps, lengths, pairs, fdiv)
  z = beta * (s_w - s_l)
  eps = label_smoothing
  loss = (-(1.0 - eps) * _log_sigmoid(z) + eps * _log_sigmoid(-z)) / (1.0 - 2.0 * eps)
  return arrays.reduce_pairs(loss, pairs, reduce_fn)


# ------------------------------------------------------------------------------------------------
# IPO, hinge / SLiC-HF, LN-DPO, DPO^γ.


def _ipo(name, logps, ref_logps, labels, lengths, where, weights, beta, fdiv, reduce_fn, normalize):
  arrays.check_positive("beta", beta, where=name)
  pairs = arrays.order_pairs(
      name, logps, labels, where, weights, ref_logps=ref_logps, lengths=lengths)
  s_w, s_l = _margin_scores(name, logps, ref_logps, lengths, pairs, fdiv, normalize=normalize)
  return arrays.reduce_pairs(jnp.square(s_w - s_l - 1.0 / (2.0 * beta)), pairs, reduce_fn)


def ipo_sum(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """IPO on summed log-ratios (paper, torchtune, OpenRLHF): `ℓ = (h − 1/(2β))²` (β = paper τ).

  Paper: "A General Theoretical Paradigm to Understand Learning from Human Preferences"
  (Azar et al., 2023).
  """
  return _ipo("ipo_sum", logps, ref_logps, labels, lengths, where, weights, beta, fdiv,
              reduce_fn, normalize=False)


def ipo_mean(
    logps, ref_logps, labels=None, *, lengths, where=None, weights=None, beta: float = 0.1,
    fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """IPO on per-token log-ratios (current TRL; default `ipo`): `ℓ = (h̄ − 1/(2β))²`,
  `h̄ = ρ_w/n_w − ρ_l/n_l`, `n = max(lengths, 1)`.

  Paper: "A General Theoretical Paradigm to Understand Learning from Human Preferences"
  (Azar et al., 2023).
  """
  return _ipo("ipo_mean", logps, ref_logps, labels, lengths, where, weights, beta, fdiv,
              reduce_fn, normalize=True)


def hinge(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """SLiC hinge (TRL, LiPO's SLiC): `ℓ = max(0, 1 − β·h)`; β = 1/margin.

  The K = 2 case of the pairwise hinge (`docs/conventions.md`). Paper: "SLiC-HF: Sequence
  Likelihood Calibration with Human Feedback" (Zhao et al., 2023); "Statistical Rejection Sampling
  Improves Preference Optimization" (Liu et al., 2024).
  """
  name = "hinge"
  arrays.check_positive("beta", beta, where=name)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  s_w, s_l = _margin_scores(name, logps, ref_logps, lengths, pairs, fdiv)
  return arrays.reduce_pairs(jax.nn.relu(1.0 - beta * (s_w - s_l)), pairs, reduce_fn)


def slic_hf(
    logps, ref_logps=None, labels=None, *, target_logps, delta: float, reg_weight: float,
    lengths=None, where=None, weights=None, reduce_fn=jnp.mean,
):
  """SLiC-HF (paper form, reference-free): `ℓ = max(0, δ − lp_w + lp_l) − λ·lp(y_ref)`.

  `y_ref` is a target (SFT) sequence. δ (`delta`) and λ (`reg_weight`) have no verified
  defaults and must be given.

  Paper: "SLiC-HF: Sequence Likelihood Calibration with Human Feedback" (Zhao et al., 2023).

  Args:
    logps, labels, where, weights: `[..., 2]`. ref_logps: ignored (may be None).
    target_logps: `[...]` summed policy log-prob of the target sequence of each pair.
    delta: margin δ ≥ 0. reg_weight: λ ≥ 0.
  """
  name = "slic_hf"
  del ref_logps, lengths
  arrays.check_range("delta", delta, low=0.0, where=name)
  arrays.check_range("reg_weight", reg_weight, low=0.0, where=name)
  pairs = arrays.order_pairs(name, logps, labels, where, weights)
  arrays.check_shapes(name, "the pair axes of logps", pairs.valid, target_logps=target_logps)
  lp_w, lp_l = arrays.chosen_rejected(arrays.as_float(logps), pairs.swap)
  loss = jax.nn.relu(delta - lp_w + lp_l) - reg_weight * arrays.as_float(target_logps)
  return arrays.reduce_pairs(loss, pairs, reduce_fn)


def ln_dpo(
    logps, ref_logps, labels=None, *, lengths, where=None, weights=None, beta: float = 0.1,
    fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """LN-DPO (TRL `sigmoid_norm`): `ℓ = −logσ(β·(ρ_w/n_w − ρ_l/n_l))`, `n = max(lengths, 1)`.

  Useful β is much larger than for DPO (per-token ratios are ~1/n of the sums).
  Paper: "The Hitchhiker's Guide to Human Alignment with *PO" (that its LN-DPO is exactly this is
  unverified).
  """
  name = "ln_dpo"
  arrays.check_positive("beta", beta, where=name)
  pairs = arrays.order_pairs(
      name, logps, labels, where, weights, ref_logps=ref_logps, lengths=lengths)
  s_w, s_l = _margin_scores(name, logps, ref_logps, lengths, pairs, fdiv, normalize=True)
  return arrays.reduce_pairs(-_log_sigmoid(beta * (s_w - s_l)), pairs, reduce_fn)


def dpo_gamma(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    gamma: float = 1.0, fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """DPO^γ: `ℓ = −logσ(β·[(lp_w − lp_l) − γ·(lr_w − lr_l)])`; γ = 1 is DPO, γ = 0 drops the
  reference from the margin.

  Paper: "Preference Learning Algorithms Do Not Learn Preference Rankings" (Chen, Malladi,
  Zhang, Chen, Zhang, Ranganath, Cho, 2024); code angie-chen55/pref-learning-ranking-acc.
  """
  name = "dpo_gamma"
  arrays.check_positive("beta", beta, where=name)
  arrays.check_range("gamma", gamma, low=0.0, where=name)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  s_w, s_l = _margin_scores(name, logps, ref_logps, lengths, pairs, fdiv, gamma=gamma)
  return arrays.reduce_pairs(-_log_sigmoid(beta * (s_w - s_l)), pairs, reduce_fn)


# ------------------------------------------------------------------------------------------------
# NCA, EXO, APO, SPPO-hard, DiscoPOP.


def nca_pair(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """NCA (pairwise, TRL): `ℓ = −logσ(βρ_w) − ½·logσ(−βρ_w) − ½·logσ(−βρ_l)`.

  Paper: "Noise Contrastive Alignment of Language Models with Explicit Rewards" (Chen et al.,
  2024).
  """
  name = "nca_pair"
  arrays.check_positive("beta", beta, where=name)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  s_w, s_l = _margin_scores(name, logps, ref_logps, lengths, pairs, fdiv)
  loss = (-_log_sigmoid(beta * s_w) - 0.5 * _log_sigmoid(-beta * s_w)
          - 0.5 * _log_sigmoid(-beta * s_l))
  return arrays.reduce_pairs(loss, pairs, reduce_fn)


def exo_pair(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    label_smoothing: float = 1e-3, fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """EXO (pairwise): reverse KL from the model's pair distribution to the smoothed label.

  `q = σ(βh)`; `ℓ = q·(logσ(βh) − log(1−ε)) + (1−q)·(logσ(−βh) − log ε)`, ε ∈ (0, 1)
  required (default 1e−3; raises at ε = 0).

  Paper: "Towards Efficient Exact Optimization of Language Model Alignment" (Ji et al., 2024).
  """
  name = "exo_pair"
  arrays.check_positive("beta", beta, where=name)
  arrays.check_range("label_smoothing", label_smoothing, low=0.0, high=1.0,
                     low_inclusive=False, high_inclusive=False, where=name)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  s_w, s_l = _margin_scores(name, logps, ref_logps, lengths, pairs, fdiv)
  z = beta * (s_w - s_l)
  eps = label_smoothing
  loss = jax.nn.sigmoid(z) * (_log_sigmoid(z) - jnp.log1p(-eps)) + jax.nn.sigmoid(-z) * (
      _log_sigmoid(-z) - jnp.log(eps)
  )
  return arrays.reduce_pairs(loss, pairs, reduce_fn)


_APO_PAPER = (
    "Anchored Preference Optimization and Contrastive Revisions: Addressing Underspecification "
    "in Alignment (D'Oosterlinck et al., 2024)"
)


def _apo(name, anchored_loss, logps, ref_logps, labels, where, weights, beta, reduce_fn):
  """The APO body: `anchored_loss(ρ_w, ρ_l, β)` per pair on raw log-ratios, reduced over pairs."""
  arrays.check_positive("beta", beta, where=name)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  rho_w, rho_l = _raw_log_ratios(name, logps, ref_logps, pairs)
  return arrays.reduce_pairs(anchored_loss(rho_w, rho_l, beta), pairs, reduce_fn)


def _apo_zero_terms(rho_w, rho_l, beta):
  return (1.0 - jax.nn.sigmoid(beta * rho_w)) + jax.nn.sigmoid(beta * rho_l)


def _apo_down_terms(rho_w, rho_l, beta):
  return jax.nn.sigmoid(beta * rho_w) + (1.0 - jax.nn.sigmoid(beta * (rho_w - rho_l)))


def apo_zero(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    reduce_fn=jnp.mean,
):
  """APO-zero: `ℓ = (1 − σ(βρ_w)) + σ(βρ_l)` (chosen up, rejected down); raw log-ratios.

  Paper: "Anchored Preference Optimization and Contrastive Revisions" (D'Oosterlinck et al.,
  2024).
  """
  del lengths
  return _apo("apo_zero", _apo_zero_terms, logps, ref_logps, labels, where, weights, beta,
              reduce_fn)


def apo_down(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    reduce_fn=jnp.mean,
):
  """APO-down: `ℓ = σ(βρ_w) + (1 − σ(β(ρ_w − ρ_l)))` (both down, rejected more); raw ρ.

  Paper: "Anchored Preference Optimization and Contrastive Revisions" (D'Oosterlinck et al.,
  2024).
  """
  del lengths
  return _apo("apo_down", _apo_down_terms, logps, ref_logps, labels, where, weights, beta,
              reduce_fn)


def sppo_hard(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """SPPO-hard: `ℓ = (ρ_w − 1/(2β))² + (ρ_l + 1/(2β))²` (hard win probabilities 1 and 0).

  In SPPO proper the "reference" is the previous-iteration policy. Paper: "Self-Play Preference
  Optimization for Language Model Alignment" (Wu et al., 2024); code uclaml/SPPO.
  """
  name = "sppo_hard"
  arrays.check_positive("beta", beta, where=name)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  s_w, s_l = _margin_scores(name, logps, ref_logps, lengths, pairs, fdiv)
  target = 1.0 / (2.0 * beta)
  return arrays.reduce_pairs(jnp.square(s_w - target) + jnp.square(s_l + target), pairs, reduce_fn)


def discopop(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    tau: float = 0.05, fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """DiscoPOP (log-ratio modulated loss): `z = βh`, `m = σ(z/τ)`,
  `ℓ = (1 − m)·(−logσ(z)) + m·e^{−z}`, with `m·e^{−z}` evaluated as `exp(logσ(z/τ) − z)`
  (exponent clipped at 80) so that very negative `z` gives no `inf·0`.

  Paper: "Discovering Preference Optimization Algorithms with and for Large Language Models"
  (Lu et al., 2024). τ = 0.05.
  """
  name = "discopop"
  arrays.check_positive("beta", beta, where=name)
  arrays.check_positive("tau", tau, where=name)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  s_w, s_l = _margin_scores(name, logps, ref_logps, lengths, pairs, fdiv)
  z = beta * (s_w - s_l)
  loss = jax.nn.sigmoid(-z / tau) * (-_log_sigmoid(z)) + scores.clipped_exp(
      _log_sigmoid(z / tau) - z
  )
  return arrays.reduce_pairs(loss, pairs, reduce_fn)


# ------------------------------------------------------------------------------------------------
# BCO-pair.


def _bco_pair_loss(r_w, r_l, shift):
  return -_log_sigmoid(r_w - shift) - _log_sigmoid(-(r_l - shift))


def bco_pair_shift(
    logps, ref_logps, labels=None, *, state: Optional[RunningMoments] = None,
    training: bool = True, lengths=None, where=None, weights=None, beta: float = 0.1,
    fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """BCO-pair with the running-mean shift (TRL ≤ v0.28, default BCO-pair).

  `r = βρ`; on training steps the state is first updated with the single value
  `mean(concat(r_w, r_l))` over the valid pairs of the (global) batch, then `δ = μ`
  (stop-gradient); `ℓ = −logσ(r_w − δ) − logσ(−(r_l − δ))`. `training=False` uses the state
  without updating it.

  Paper: "Binary Classifier Optimization for Large Language Model Alignment" (Jung et al., 2024).

  Args:
    state: `RunningMoments` (None = `init_state()`), carried in the train state.

  Returns:
    `(loss, new_state)`.
  """
  name = "bco_pair_shift"
  arrays.check_positive("beta", beta, where=name)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  s_w, s_l = _margin_scores(name, logps, ref_logps, lengths, pairs, fdiv)
  r_w, r_l = beta * s_w, beta * s_l
  state = running_moments_init() if state is None else state
  if training:
    batch_mean = arrays.masked_mean(0.5 * (r_w + r_l), pairs.valid)
    state = running_moments_update(state, batch_mean, jnp.any(pairs.valid))
  loss = _bco_pair_loss(r_w, r_l, jax.lax.stop_gradient(state.mean))
  return arrays.reduce_pairs(loss, pairs, reduce_fn), state


def bco_pair_noshift(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    fdiv: scores.FDiv = "reverse_kl", reduce_fn=jnp.mean,
):
  """BCO-pair without shift (TRL ≥ v0.29): `ℓ = −logσ(βρ_w) − logσ(−βρ_l)`.

  Paper: "Binary Classifier Optimization for Large Language Model Alignment" (Jung et al., 2024).
  """
  name = "bco_pair_noshift"
  arrays.check_positive("beta", beta, where=name)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  s_w, s_l = _margin_scores(name, logps, ref_logps, lengths, pairs, fdiv)
  return arrays.reduce_pairs(_bco_pair_loss(beta * s_w, beta * s_l, 0.0), pairs, reduce_fn)


# ------------------------------------------------------------------------------------------------
# AOT.


def _sorted_quantile_loss(name, u, v, pairs, beta, label_smoothing, reduce_fn):
  """Sorts `u` and `v` independently over all valid pairs (all leading axes together) and
  applies the smoothed logistic loss to `β·(sort(u)_k − sort(v)_k)`.

  Invalid pairs are sorted to the end (+inf) and their quantile slots masked with a double
  `where`, so they neither shift the valid quantiles nor reach the gradient.
  """
  arrays.check_positive("beta", beta, where=name)
  check_label_smoothing(name, label_smoothing)
  shape = jnp.shape(pairs.valid)
  valid = jnp.ravel(pairs.valid)
  su = jnp.sort(jnp.where(valid, jnp.ravel(u), jnp.inf))
  sv = jnp.sort(jnp.where(valid, jnp.ravel(v), jnp.inf))
  rank_valid = jnp.arange(valid.size) < jnp.sum(valid)
  delta = jnp.where(rank_valid, su - sv, 0.0)
  loss = smoothed_logistic(beta * delta, label_smoothing)
  return arrays.reduce_loss(jnp.reshape(loss, shape), jnp.reshape(rank_valid, shape), reduce_fn)


def aot_paired(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    label_smoothing: float = 0.0, reduce_fn=jnp.mean,
):
  """AOT (paired): first-order stochastic dominance via the 1-D optimal-transport closed form.

  `u_b = lp_w − lp_l`, `v_b = lr_w − lr_l`; sort each ascending over the batch (all leading
  axes together: batch-coupled, the global batch under `jit`); `δ_k = sort(u)_k − sort(v)_k`;
  `ℓ_k = −(1−ε)·logσ(βδ_k) − ε·logσ(−βδ_k)`; `L = mean_k ℓ_k`. Gradients flow through the sort.
  Raw log-probs (no f-divergence); no weights. With `reduce_fn=None` the values are indexed by
  quantile rank k (in row-major order of the leading axes), not by example.

  Paper: "Distributional Preference Alignment of LLMs via Optimal Transport" (Melnyk et al.,
  NeurIPS 2024).
  """
  name = "aot_paired"
  del lengths
  if weights is not None:
    raise ValueError(f"{name}: AOT takes no weights (its losses are per quantile, not per pair).")
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  arrays.require(name, ref_logps, "ref_logps")
  lp_w, lp_l = arrays.chosen_rejected(arrays.as_float(logps), pairs.swap)
  lr_w, lr_l = arrays.chosen_rejected(jax.lax.stop_gradient(arrays.as_float(ref_logps)), pairs.swap)
  return _sorted_quantile_loss(name, lp_w - lp_l, lr_w - lr_l, pairs, beta, label_smoothing,
                               reduce_fn)


def aot_unpaired(
    logps, ref_logps, labels=None, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    label_smoothing: float = 0.0, reduce_fn=jnp.mean,
):
  """AOT (unpaired): `δ_k = sort(ρ_w)_k − sort(ρ_l)_k` over the batch, same penalty as
  `aot_paired`.

  Paper: "Distributional Preference Alignment of LLMs via Optimal Transport" (Melnyk et al.,
  NeurIPS 2024).
  """
  name = "aot_unpaired"
  del lengths
  if weights is not None:
    raise ValueError(f"{name}: AOT takes no weights (its losses are per quantile, not per pair).")
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  rho_w, rho_l = _raw_log_ratios(name, logps, ref_logps, pairs)
  return _sorted_quantile_loss(name, rho_w, rho_l, pairs, beta, label_smoothing, reduce_fn)


# ------------------------------------------------------------------------------------------------
# SFT term and multi-term mixtures.


def sft(
    logps, ref_logps=None, labels=None, *, lengths, where=None, weights=None, reduce_fn=jnp.mean,
):
  """SFT term: token-mean NLL over all chosen completion tokens, `−Σ lp_w / Σ n_w`.

  Computed from summed log-probs and lengths over the valid pairs of the whole input. The
  unreduced values are per-pair shares `−lp_w·N/Σn_w` (N = number of valid pairs), so that
  `reduce_fn=jnp.mean` gives the token mean and sums/`sum_and_count` stay consistent with it.

  Args:
    logps, labels, lengths, where, weights: `[..., 2]`. ref_logps: ignored.
  """
  name = "sft"
  del ref_logps
  arrays.require(name, lengths, "lengths")
  pairs = arrays.order_pairs(name, logps, labels, where, weights, lengths=lengths)
  return arrays.reduce_pairs(chosen_nll(logps, lengths, pairs), pairs, reduce_fn)


Term = Union[tuple[Union[str, Callable], float], tuple[Union[str, Callable], float, dict]]


def _accepts(fn, key) -> bool:
  params = inspect.signature(fn).parameters
  return key in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def combine(terms: Sequence[Term]) -> Callable:
  """A multi-term objective `L = Σ_k w_k · mean(ℓ_k)` (each term reduced separately).

  Args:
    terms: `(objective, weight)` or `(objective, weight, hyper_parameters)` tuples; an
      objective is a registry name or a function with the uniform signature.

  Returns:
    `loss_fn(logps, ref_logps, labels, *, state=None, training=True, reduce_fn=jnp.mean,
    **inputs)`. Common inputs (`lengths`, `where`, `weights`, extra inputs such as
    `target_logps`) go to every term whose signature accepts them (an input no term accepts
    raises). `reduce_fn` is applied per term, then weighted and summed (`sum_and_count` returns
    `(Σ w_k·sum_k, count)`). If any term is stateful, `loss_fn` takes `state=` (a tuple with one
    entry per term, None for stateless ones) and returns `(loss, new_state)`;
    `loss_fn.init_state()` gives the initial state and `loss_fn.stateful` says which.

  Recipes:
    RPO ("Iterative Reasoning Preference Optimization", DPO + NLL, α = 1):
      `combine([("dpo", 1.0), ("sft", 1.0)])`.
    MPO (mixed preference optimisation): DPO, BCO-pair and SFT weighted 0.8 / 0.2 / 1.0:
      `combine([("dpo", 0.8), ("bco_pair_shift", 0.2), ("sft", 1.0)])`.
  """
  resolved = []
  for term in terms:
    if len(term) not in (2, 3):
      raise ValueError(f"combine: a term is (objective, weight[, hyper_parameters]), got {term!r}.")
    objective, weight = term[0], term[1]
    hyper = dict(term[2]) if len(term) == 3 else {}
    is_stateful = isinstance(objective, str) and spec(objective).stateful
    init = spec(objective).init_state if is_stateful else None
    fn = get(objective) if isinstance(objective, str) else objective
    resolved.append((fn, float(weight), hyper, is_stateful, init))
  if not resolved:
    raise ValueError("combine: at least one term is required.")
  any_stateful = any(r[3] for r in resolved)

  def init_state():
    return tuple(init() if is_stateful else None for _, _, _, is_stateful, init in resolved)

  def loss_fn(logps, ref_logps, labels=None, *, state=None, training=True, reduce_fn=jnp.mean,
              **inputs):
    unused = [k for k in inputs if not any(_accepts(r[0], k) for r in resolved)]
    if unused:
      raise ValueError(f"combine: no term accepts the input(s) {unused}.")
    states = init_state() if state is None else tuple(state)
    total, count, new_states = 0.0, None, []
    for (fn, weight, hyper, is_stateful, _), term_state in zip(resolved, states):
      kwargs = {k: v for k, v in inputs.items() if _accepts(fn, k)}
      if is_stateful:
        value, term_state = fn(logps, ref_logps, labels, state=term_state, training=training,
                               reduce_fn=reduce_fn, **kwargs, **hyper)
      else:
        value = fn(logps, ref_logps, labels, reduce_fn=reduce_fn, **kwargs, **hyper)
      new_states.append(term_state)
      if isinstance(value, tuple):  # (sum, count)
        value, count = value
      total = total + weight * value
    result = total if count is None else (total, count)
    return (result, tuple(new_states)) if any_stateful else result

  loss_fn.init_state = init_state
  loss_fn.stateful = any_stateful
  return loss_fn


# ------------------------------------------------------------------------------------------------
# Registry.

_DPO_PAPER = ("Direct Preference Optimization: Your Language Model is Secretly a Reward Model "
              "(Rafailov et al., 2023); code eric-mitchell/direct-preference-optimization")
_IPO_PAPER = ("A General Theoretical Paradigm to Understand Learning from Human Preferences "
              "(Azar et al., 2023)")
_BCO_PAPER = "Binary Classifier Optimization for Large Language Model Alignment (Jung et al., 2024)"
_AOT_PAPER = ("Distributional Preference Alignment of LLMs via Optimal Transport (Melnyk et al., "
              "NeurIPS 2024)")

for _name, _fn, _paper, _extra in (
    ("dpo", dpo, _DPO_PAPER, {}),
    ("cdpo", cdpo, "A note on DPO with noisy preferences & relationship to IPO (Mitchell, 2023)",
     {}),
    ("rdpo", rdpo, "Provably Robust DPO: Aligning Language Models with Noisy Feedback "
     "(Chowdhury, Kini, Natarajan, ICML 2024)", {}),
    ("ipo_sum", ipo_sum, _IPO_PAPER, {}),
    ("ipo_mean", ipo_mean, _IPO_PAPER, {"needs_lengths": True, "aliases": ("ipo",)}),
    ("hinge", hinge, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback (Zhao et al., "
     "2023); Statistical Rejection Sampling Improves Preference Optimization", {}),
    ("slic_hf", slic_hf, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback (Zhao et "
     "al., 2023)", {"needs_reference": False, "extra_inputs": ("target_logps",)}),
    ("ln_dpo", ln_dpo, "The Hitchhiker's Guide to Human Alignment with *PO",
     {"needs_lengths": True, "aliases": ("sigmoid_norm",)}),
    ("dpo_gamma", dpo_gamma, "Preference Learning Algorithms Do Not Learn Preference Rankings "
     "(Chen et al., 2024); code angie-chen55/pref-learning-ranking-acc", {}),
    ("nca_pair", nca_pair, "Noise Contrastive Alignment of Language Models with Explicit Rewards "
     "(Chen et al., 2024)", {}),
    ("exo_pair", exo_pair, "Towards Efficient Exact Optimization of Language Model Alignment "
     "(Ji et al., 2024)", {}),
    ("apo_zero", apo_zero, _APO_PAPER, {}),
    ("apo_down", apo_down, _APO_PAPER, {}),
    ("sppo_hard", sppo_hard, "Self-Play Preference Optimization for Language Model Alignment "
     "(Wu et al., 2024); code uclaml/SPPO", {}),
    ("discopop", discopop, "Discovering Preference Optimization Algorithms with and for Large "
     "Language Models (Lu et al., 2024)", {}),
    ("bco_pair_shift", bco_pair_shift, _BCO_PAPER,
     {"stateful": True, "init_state": running_moments_init}),
    ("bco_pair_noshift", bco_pair_noshift, _BCO_PAPER, {}),
    ("aot_paired", aot_paired, _AOT_PAPER, {}),
    ("aot_unpaired", aot_unpaired, _AOT_PAPER, {}),
    ("sft", sft, "Supervised fine-tuning term (token-mean NLL of the chosen responses)",
     {"needs_reference": False, "needs_lengths": True}),
):
  register(_name, fn=_fn, family="pairwise", paper=_paper, **_extra)
del _name, _fn, _paper, _extra
