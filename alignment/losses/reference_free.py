"""Reference-free (and reference-margin) pairwise objectives.

Same layout and label semantics as `alignment.losses.pairwise`: inputs `[..., 2]`, slot 0 the
chosen response, labels ordering each pair (ties and masked slots contribute nothing),
`reduce_fn=jnp.mean` = mean over the valid pairs of the whole input, `None` = `[...]` per pair.
`ref_logps` may be None except for `cpo_cond*` and `rdpo_rationale`, which use the reference.

Objectives with an NLL term use the token-mean cross-entropy over all chosen completion tokens
of the batch, `−Σ lp_w / Σ n_w`, computed from summed log-probs and `lengths` (each term reduced
separately, `docs/conventions.md`); per-pair unreduced values carry that mean as per-pair shares.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignment import scores
from alignment import arrays
from alignment.losses import pairwise
from alignment.losses.registry import register

Array = jax.Array
_log_sigmoid = jax.nn.log_sigmoid


def _average_pair(name, logps, lengths, pairs):
  """`(a_w, a_l)`: average log-probs `lp / max(n, 1)` ordered by the labels."""
  arrays.require(name, lengths, "lengths")
  return arrays.chosen_rejected(scores.average_logprob(logps, lengths), pairs.swap)


# ------------------------------------------------------------------------------------------------
# SimPO, CPO and AlphaPO.


def simpo(
    logps, ref_logps=None, labels=None, *, lengths, where=None, weights=None, beta: float = 2.5,
    gamma: float = 1.375, label_smoothing: float = 0.0, reduce_fn=jnp.mean,
):
  """SimPO: `ℓ = −(1−ε)·logσ(β(a_w − a_l) − γ) − ε·logσ(−(β(a_w − a_l) − γ))`, `a = lp/n`.

  Defaults are the paper's (β = 2.5, γ = 1.375; TRL's CPOConfig uses β = 0.1, γ = 0.5), ε = 0.
  Paper: "SimPO: Simple Preference Optimization with a Reference-Free Reward" (Meng et al.,
  2024); code princeton-nlp/SimPO.

  Args:
    logps, labels, lengths, where, weights: `[..., 2]`, slot 0 chosen. ref_logps: ignored.
  """
  name = "simpo"
  del ref_logps
  arrays.check_positive("beta", beta, where=name)
  pairwise.check_label_smoothing(name, label_smoothing)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, lengths=lengths)
  a_w, a_l = _average_pair(name, logps, lengths, pairs)
  loss = pairwise.smoothed_logistic(beta * (a_w - a_l) - gamma, label_smoothing)
  return arrays.reduce_pairs(loss, pairs, reduce_fn)


_CPO_MARGINS = ("sigmoid", "hinge", "ipo", "simpo")


def cpo_contrastive(
    logps, ref_logps=None, labels=None, *, lengths=None, where=None, weights=None,
    beta: float = 0.1, label_smoothing: float = 0.0, cpo_alpha: float = 1.0,
    margin: str = "sigmoid", simpo_gamma: float = 0.5, reduce_fn=jnp.mean,
):
  """CPO (Contrastive Preference Optimization): a reference-free margin loss plus an NLL term.

  `L = mean[margin loss] + cpo_alpha·NLL(y_w)` (NLL = token mean `−Σlp_w/Σn_w`). Margin shapes:
  - "sigmoid" (default): `m = lp_w − lp_l`, `−(1−ε)·logσ(βm) − ε·logσ(−βm)`;
  - "hinge": `max(0, 1 − βm)`;
  - "ipo": `(m̄ − 1/(2β))²` with averaged log-probs `m̄ = a_w − a_l`;
  - "simpo": SimPO's `β(a_w − a_l) − γ` (γ = `simpo_gamma`, TRL's 0.5) with smoothing.

  Paper: "Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance in
  Machine Translation" (Xu et al., 2024). Not the constrained CPO (`cpo_cond`).

  Args:
    logps, labels, lengths, where, weights: `[..., 2]`. ref_logps: ignored. `lengths` is
      required unless `cpo_alpha == 0` and the margin uses sums.
    beta: β (0.1). label_smoothing: ε (0). cpo_alpha: NLL weight (1.0; 0 = pure margin).
  """
  name = "cpo_contrastive"
  del ref_logps
  if margin not in _CPO_MARGINS:
    raise ValueError(f"{name}: margin must be one of {_CPO_MARGINS}, got {margin!r}.")
  arrays.check_positive("beta", beta, where=name)
  pairwise.check_label_smoothing(name, label_smoothing)
  arrays.check_range("cpo_alpha", cpo_alpha, low=0.0, where=name)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, lengths=lengths)
  if margin in ("sigmoid", "hinge"):
    lp_w, lp_l = arrays.chosen_rejected(arrays.as_float(logps), pairs.swap)
    z = beta * (lp_w - lp_l)
    loss = (pairwise.smoothed_logistic(z, label_smoothing) if margin == "sigmoid"
            else jax.nn.relu(1 - z))
  else:
    a_w, a_l = _average_pair(name, logps, lengths, pairs)
    if margin == "ipo":
      loss = jnp.square(a_w - a_l - 1.0 / (2.0 * beta))
    else:
      loss = pairwise.smoothed_logistic(beta * (a_w - a_l) - simpo_gamma, label_smoothing)
  if arrays.concrete_float(cpo_alpha) != 0.0:
    arrays.require(name, lengths, "lengths")
    loss = loss + cpo_alpha * pairwise.chosen_nll(logps, lengths, pairs)
  return arrays.reduce_pairs(loss, pairs, reduce_fn)


def alphapo(
    logps, ref_logps=None, labels=None, *, lengths, where=None, weights=None, beta: float = 2.5,
    gamma: float = 1.375, alpha: float = 0.0, label_smoothing: float = 0.0, reduce_fn=jnp.mean,
):
  """AlphaPO: SimPO with the reward shape `r_α(a) = (1 − e^{−α·a})/α` (`→ a` as α → 0).

  `m = r_α(a_w) − r_α(a_l)`; `ℓ = −(1−ε)·logσ(βm − γ) − ε·logσ(−(βm − γ))`. α = 0 (default)
  is SimPO; the exponent `−α·a` is clipped at 80.

  Paper: "AlphaPO: Reward Shape Matters for LLM Alignment" (2025).
  """
  name = "alphapo"
  del ref_logps
  arrays.check_positive("beta", beta, where=name)
  pairwise.check_label_smoothing(name, label_smoothing)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, lengths=lengths)
  a_w, a_l = _average_pair(name, logps, lengths, pairs)
  m = scores.alpha_reward(a_w, alpha=alpha) - scores.alpha_reward(a_l, alpha=alpha)
  loss = pairwise.smoothed_logistic(beta * m - gamma, label_smoothing)
  return arrays.reduce_pairs(loss, pairs, reduce_fn)


# ------------------------------------------------------------------------------------------------
# ORPO and RORPO.


def _orpo_terms(name, logps, labels, lengths, where, weights, beta, **others):
  """`(pairs, NLL shares, logσ(log odds ratio))` shared by ORPO and RORPO."""
  arrays.check_positive("beta", beta, where=name)
  arrays.require(name, lengths, "lengths")
  pairs = arrays.order_pairs(name, logps, labels, where, weights, lengths=lengths, **others)
  odds_w, odds_l = arrays.chosen_rejected(
      scores.log_odds(scores.average_logprob(logps, lengths)), pairs.swap
  )
  return pairs, pairwise.chosen_nll(logps, lengths, pairs), _log_sigmoid(odds_w - odds_l)


def orpo(
    logps, ref_logps=None, labels=None, *, lengths, where=None, weights=None, beta: float = 0.1,
    reduce_fn=jnp.mean,
):
  """ORPO: `L = NLL(y_w) − β·mean(logσ(log_odds))`,
  `log_odds = (a_w − a_l) − (log1mexp(a_w) − log1mexp(a_l))`, `a = lp/n` clamped at −1e−7.

  NLL is the token mean over chosen completion tokens (prompt tokens excluded). `mapo_llm` is an
  alias (the MaPO authors call their loss the "full ORPO loss").

  Paper: "ORPO: Monolithic Preference Optimization without Reference Model" (Hong et al., 2024);
  code xfactlab/orpo. β is the paper's λ (0.1).
  """
  pairs, nll, log_sig = _orpo_terms("orpo", logps, labels, lengths, where, weights, beta)
  del ref_logps
  return arrays.reduce_pairs(nll - beta * log_sig, pairs, reduce_fn)


def _rorpo(name, logps, labels, lengths, where, weights, beta, gamma, rationale_logps,
           rationale_term, reduce_fn):
  pairs, nll, log_sig = _orpo_terms(name, logps, labels, lengths, where, weights, beta)
  arrays.check_shapes(name, "the pair axes of logps", pairs.valid,
                      rationale_logps=rationale_logps)
  rationale = rationale_term(gamma * arrays.as_float(rationale_logps))
  return arrays.reduce_pairs(nll - (beta * log_sig + rationale), pairs, reduce_fn)


def rorpo_sigmoid(
    logps, ref_logps=None, labels=None, *, rationale_logps, lengths, where=None, weights=None,
    beta: float = 0.1, gamma: float = 1.0, reduce_fn=jnp.mean,
):
  """RORPO (sigmoid): `L = NLL(y_w) − mean[β·logσ(log_odds) + logσ(γ·lp_θ(r | x_rat))]`.

  `rationale_logps` `[...]`: summed policy log-prob of the rationale under the rationale prompt.
  Keeping ORPO's NLL term is the default (unverified).
  Paper: "Data-Centric Human Preference Optimization with Rationales"; code
  reds-lab/preference-learning-with-rationales.
  """
  del ref_logps
  return _rorpo("rorpo_sigmoid", logps, labels, lengths, where, weights, beta, gamma,
                rationale_logps, _log_sigmoid, reduce_fn)


def rorpo_linear(
    logps, ref_logps=None, labels=None, *, rationale_logps, lengths, where=None, weights=None,
    beta: float = 0.1, gamma: float = 1.0, reduce_fn=jnp.mean,
):
  """RORPO (linear): `L = NLL(y_w) − mean[β·logσ(log_odds) + γ·lp_θ(r | x_rat)]`.

  Paper: "Data-Centric Human Preference Optimization with Rationales".
  """
  del ref_logps
  return _rorpo("rorpo_linear", logps, labels, lengths, where, weights, beta, gamma,
                rationale_logps, lambda x: x, reduce_fn)


def rdpo_rationale(
    logps, ref_logps, labels=None, *, rationale_logps, lengths=None, where=None, weights=None,
    beta: float = 0.1, gamma: float = 0.1, reduce_fn=jnp.mean,
):
  """RDPO (DPO with rationales): `ℓ = −logσ(β·h) − logσ(γ·lp_θ(r | x_rat))`.

  `rationale_logps` `[...]`: summed policy log-prob of the rationale (the reference rationale
  log-prob is unused). For `lp ≪ 0`, `logσ(γ·lp) ≈ γ·lp`: γ acts as an NLL weight.
  Paper: "Data-Centric Human Preference Optimization with Rationales"; β = γ = 0.1.
  """
  name = "rdpo_rationale"
  del lengths
  arrays.check_positive("beta", beta, where=name)
  pairs = arrays.order_pairs(name, logps, labels, where, weights, ref_logps=ref_logps)
  arrays.require(name, ref_logps, "ref_logps")
  arrays.check_shapes(name, "the pair axes of logps", pairs.valid,
                      rationale_logps=rationale_logps)
  rho_w, rho_l = arrays.chosen_rejected(scores.log_ratio(logps, ref_logps), pairs.swap)
  loss = -_log_sigmoid(beta * (rho_w - rho_l)) - _log_sigmoid(
      gamma * arrays.as_float(rationale_logps)
  )
  return arrays.reduce_pairs(loss, pairs, reduce_fn)


# ------------------------------------------------------------------------------------------------
# MaPO.


def _mapo(name, m, pairs, beta, snr_value, scale, reduce_fn):
  """`ℓ = m_w − β·logσ(T·(φ(c·m_w) − φ(c·m_l)))` per pair (mean of each term = mean of the sum)."""
  arrays.check_positive("beta", beta, where=name)
  arrays.check_positive("snr_value", snr_value, where=name)
  arrays.check_positive("scale", scale, where=name)
  m_w, m_l = arrays.chosen_rejected(m, pairs.swap)
  odds = scores.phi(snr_value * m_w) - scores.phi(snr_value * m_l)
  return arrays.reduce_pairs(m_w - beta * _log_sigmoid(scale * odds), pairs, reduce_fn)


def mapo_diffusion(
    mse, ref_logps=None, labels=None, *, lengths=None, where=None, weights=None,
    beta: float = 0.1, snr_value: float = 0.5, num_train_timesteps: int = 1000,
    reduce_fn=jnp.mean,
):
  """MaPO for diffusion models: `L = mean(m_w) − β·mean(logσ(T·(φ(c·m_w) − φ(c·m_l))))`.

  `m` = per-sample denoising MSE (mean over all non-batch dims) of the preferred / dispreferred
  image at the same noise and timestep; `φ(u) = u/(eᵘ − 1)`; `c = snr_value` (0.5),
  `T = num_train_timesteps` (1000), β = 0.1.

  Paper: "Margin-aware Preference Optimization for Aligning Diffusion Models without
  Reference"; code mapo-t2i/mapo (`compute_loss`).

  Args:
    mse: `[..., 2]` denoising MSEs (≥ 0), slot 0 preferred — in place of `logps`.
    ref_logps, lengths: ignored. labels, where, weights: `[..., 2]`.
  """
  name = "mapo_diffusion"
  del ref_logps, lengths
  pairs = arrays.order_pairs(name, mse, labels, where, weights)
  arrays.check_array_range("mse", mse, low=0.0, where=name)
  return _mapo(name, arrays.as_float(mse), pairs, beta, snr_value, num_train_timesteps,
               reduce_fn)


def mapo_llm_literal(
    logps, ref_logps=None, labels=None, *, lengths, where=None, weights=None, beta: float = 0.1,
    snr_value: float = 0.5, scale: float = 1.0, reduce_fn=jnp.mean,
):
  """MaPO's diffusion formula applied literally to LLMs (project-defined, not from a paper).

  `m = −a` (mean token NLL, `a = lp/n`); `L = mean(m_w) − β·mean(logσ(T·(φ(c·m_w) −
  φ(c·m_l))))` with `T = scale` (1) and `c = snr_value` (0.5). The default LLM analogue of MaPO is
  `mapo_llm` (= ORPO).
  """
  name = "mapo_llm_literal"
  del ref_logps
  pairs = arrays.order_pairs(name, logps, labels, where, weights, lengths=lengths)
  arrays.require(name, lengths, "lengths")
  m = -scores.average_logprob(logps, lengths)
  return _mapo(name, m, pairs, beta, snr_value, scale, reduce_fn)


# ------------------------------------------------------------------------------------------------
# Constrained / conditional-equivalence CPO.


def _cond_margins(name, logps, ref_logps, labels, lengths, where, weights, beta):
  """`(pairs, δ_π, a^ref_w, a^ref_l)` with `δ_π = a_w − a_l`."""
  arrays.check_positive("beta", beta, where=name)
  pairs = arrays.order_pairs(
      name, logps, labels, where, weights, ref_logps=ref_logps, lengths=lengths)
  arrays.require(name, ref_logps, "ref_logps")
  a_w, a_l = _average_pair(name, logps, lengths, pairs)
  ref_avg = scores.average_logprob(jax.lax.stop_gradient(arrays.as_float(ref_logps)), lengths)
  ref_w, ref_l = arrays.chosen_rejected(ref_avg, pairs.swap)
  return pairs, a_w - a_l, ref_w, ref_l


_COND_PAPER = ("Conditional Equivalence of DPO and RLHF (constrained preference optimisation); "
               "code visitworld123/CPO")


def cpo_cond(
    logps, ref_logps, labels=None, *, lengths, where=None, weights=None, beta: float = 0.1,
    gamma: float = 0.5, tau: float = 2.0, alpha: float = 1.0, reduce_fn=jnp.mean,
):
  """Constrained CPO (main): `ℓ = −logσ(β·δ_π − β·δ_ref − (β/α)·m)`,
  `m = (1/τ)·softplus(τ(γ − δ_ref))` (a smooth `max(0, γ − δ_ref)`),
  `δ_π = a_w − a_l`, `δ_ref = a^ref_w − a^ref_l` (length-normalised).

  Paper: "Conditional Equivalence of DPO and RLHF"; code visitworld123/CPO (`cpo/trainer.py`).
  Defaults β = 0.1, γ = 0.5, τ = 2.0, α = 1.0.
  """
  name = "cpo_cond"
  arrays.check_positive("tau", tau, where=name)
  arrays.check_positive("alpha", alpha, where=name)
  pairs, d_pi, ref_w, ref_l = _cond_margins(name, logps, ref_logps, labels, lengths, where,
                                            weights, beta)
  d_ref = ref_w - ref_l
  m = jax.nn.softplus(tau * (gamma - d_ref)) / tau
  loss = -_log_sigmoid(beta * d_pi - beta * d_ref - (beta / alpha) * m)
  return arrays.reduce_pairs(loss, pairs, reduce_fn)


def cpo_cond_easy(
    logps, ref_logps, labels=None, *, lengths, where=None, weights=None, beta: float = 2.5,
    gamma: float = 0.05, reduce_fn=jnp.mean,
):
  """Constrained CPO ("easy" demo config): `ℓ = −logσ(β·δ_π − β·δ_ref − m)`,
  `m = γ·(1/a^ref_w + 1/a^ref_l)` with `a^ref` clamped `≤ −1e−6` (m < 0). β = 2.5, γ = 0.05.

  Paper: "Conditional Equivalence of DPO and RLHF"; code visitworld123/CPO.
  """
  name = "cpo_cond_easy"
  pairs, d_pi, ref_w, ref_l = _cond_margins(name, logps, ref_logps, labels, lengths, where,
                                            weights, beta)
  m = gamma * (1.0 / jnp.minimum(ref_w, -1e-6) + 1.0 / jnp.minimum(ref_l, -1e-6))
  loss = -_log_sigmoid(beta * d_pi - beta * (ref_w - ref_l) - m)
  return arrays.reduce_pairs(loss, pairs, reduce_fn)


def cpo_cond_clip(
    logps, ref_logps, labels=None, *, lengths, where=None, weights=None, beta: float = 0.1,
    reduce_fn=jnp.mean,
):
  """Constrained CPO (config-class default): `ℓ = −logσ(β·(δ_π − max(δ_ref, 0)))`.

  The reference margin is subtracted only when positive. Paper: "Conditional Equivalence of DPO
  and RLHF"; code visitworld123/CPO.
  """
  name = "cpo_cond_clip"
  pairs, d_pi, ref_w, ref_l = _cond_margins(name, logps, ref_logps, labels, lengths, where,
                                            weights, beta)
  loss = -_log_sigmoid(beta * (d_pi - jnp.maximum(ref_w - ref_l, 0.0)))
  return arrays.reduce_pairs(loss, pairs, reduce_fn)


# ------------------------------------------------------------------------------------------------
# Registry.

_RATIONALE_PAPER = ("Data-Centric Human Preference Optimization with Rationales; code "
                    "reds-lab/preference-learning-with-rationales")
_MAPO_PAPER = ("Margin-aware Preference Optimization for Aligning Diffusion Models without "
               "Reference; code mapo-t2i/mapo")

for _name, _fn, _paper, _extra in (
    ("simpo", simpo, "SimPO: Simple Preference Optimization with a Reference-Free Reward (Meng "
     "et al., 2024); code princeton-nlp/SimPO", {"needs_lengths": True}),
    ("cpo_contrastive", cpo_contrastive, "Contrastive Preference Optimization: Pushing the "
     "Boundaries of LLM Performance in Machine Translation (Xu et al., 2024)",
     {"needs_lengths": True}),
    ("alphapo", alphapo, "AlphaPO: Reward Shape Matters for LLM Alignment (2025)",
     {"needs_lengths": True}),
    ("orpo", orpo, "ORPO: Monolithic Preference Optimization without Reference Model (Hong et "
     "al., 2024); code xfactlab/orpo", {"needs_lengths": True, "aliases": ("mapo_llm",)}),
    ("mapo_diffusion", mapo_diffusion, _MAPO_PAPER, {}),
    ("mapo_llm_literal", mapo_llm_literal, _MAPO_PAPER + " (project-defined LLM form)",
     {"needs_lengths": True}),
    ("cpo_cond", cpo_cond, _COND_PAPER, {"needs_reference": True, "needs_lengths": True}),
    ("cpo_cond_easy", cpo_cond_easy, _COND_PAPER,
     {"needs_reference": True, "needs_lengths": True}),
    ("cpo_cond_clip", cpo_cond_clip, _COND_PAPER,
     {"needs_reference": True, "needs_lengths": True}),
    ("rdpo_rationale", rdpo_rationale, _RATIONALE_PAPER,
     {"needs_reference": True, "extra_inputs": ("rationale_logps",)}),
    ("rorpo_sigmoid", rorpo_sigmoid, _RATIONALE_PAPER,
     {"needs_lengths": True, "extra_inputs": ("rationale_logps",)}),
    ("rorpo_linear", rorpo_linear, _RATIONALE_PAPER,
     {"needs_lengths": True, "extra_inputs": ("rationale_logps",)}),
):
  register(_name, fn=_fn, family="reference_free", paper=_paper,
           **{"needs_reference": False, **_extra})
del _name, _fn, _paper, _extra
