"""The objective registry: TRL's names, "did you mean", hyper-parameters and their checks.

Each TRL name is checked against a NumPy transcription of TRL's own formula (TRL is not a
dependency): `DPOTrainer._compute_loss`, `KTOTrainer.kto_loss`, `CPOTrainer.cpo_loss` and
`ORPOTrainer.odds_ratio_loss` of `huggingface/trl`, on summed log-probs and token counts.
"""

import inspect

import numpy as np
import pytest

from alignment import losses
from alignment.losses import registry

BETA = 0.3
RNG = np.random.default_rng(0)
B = 6
LP = RNG.uniform(-30.0, -5.0, size=(B, 2))  # policy log-probs, slot 0 chosen
REF = RNG.uniform(-30.0, -5.0, size=(B, 2))
N = RNG.integers(3, 13, size=(B, 2)).astype(np.float64)  # completion token counts


def _logsig(x):
  return -np.logaddexp(0.0, -x)


def _sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def _trl_dpo(loss_type, label_smoothing=0.0, tau=0.05):
  """TRL's `DPOTrainer` per-sequence loss (reverse-KL scores), averaged over the batch."""
  (cw, cl), (rw, rl) = LP.T, REF.T
  ch, rj = cw - rw, cl - rl  # chosen / rejected log-ratios
  d = ch - rj
  eps = label_smoothing
  aot = lambda delta: -_logsig(BETA * delta) * (1 - eps) - _logsig(-BETA * delta) * eps
  if loss_type == "sigmoid":
    out = -_logsig(BETA * d)
  elif loss_type == "hinge":
    out = np.maximum(0.0, 1 - BETA * d)
  elif loss_type == "ipo":
    out = (ch / N[:, 0] - rj / N[:, 1] - 1 / (2 * BETA)) ** 2
  elif loss_type == "exo_pair":
    out = (_sig(BETA * d) * (_logsig(BETA * d) - np.log1p(-eps))
           + _sig(-BETA * d) * (_logsig(-BETA * d) - np.log(eps)))
  elif loss_type == "nca_pair":
    out = -_logsig(BETA * ch) - 0.5 * _logsig(-BETA * ch) - 0.5 * _logsig(-BETA * rj)
  elif loss_type == "robust":
    out = (-(1 - eps) * _logsig(BETA * d) + eps * _logsig(-BETA * d)) / (1 - 2 * eps)
  elif loss_type == "bco_pair":
    out = -_logsig(BETA * ch) - _logsig(-BETA * rj)
  elif loss_type == "sppo_hard":
    out = (ch - 0.5 / BETA) ** 2 + (rj + 0.5 / BETA) ** 2
  elif loss_type == "aot":
    out = aot(np.sort(cw - cl) - np.sort(rw - rl))
  elif loss_type in ("aot_unpaired", "aot_pair"):
    out = aot(np.sort(ch) - np.sort(rj))
  elif loss_type == "apo_zero":
    out = 1 - _sig(BETA * ch) + _sig(BETA * rj)
  elif loss_type == "apo_down":
    out = _sig(BETA * ch) + 1 - _sig(BETA * d)
  elif loss_type == "discopop":
    z = BETA * d
    m = _sig(z / tau)
    out = -_logsig(z) * (1 - m) + np.exp(-z) * m
  elif loss_type == "sft":
    out = -np.sum(cw) / np.sum(N[:, 0])
  elif loss_type == "sigmoid_norm":
    out = -_logsig(BETA * (ch / N[:, 0] - rj / N[:, 1]))
  else:
    raise AssertionError(loss_type)
  return float(np.mean(out))


# TRL `loss_type` -> the hyper-parameters given to both sides (TRL's names equal ours here).
DPO_SETTINGS = {
    "sigmoid": {}, "hinge": {}, "ipo": {}, "exo_pair": {"label_smoothing": 0.01},
    "nca_pair": {}, "robust": {"label_smoothing": 0.1}, "bco_pair": {}, "sppo_hard": {},
    "aot": {"label_smoothing": 0.05}, "aot_unpaired": {"label_smoothing": 0.05},
    "aot_pair": {"label_smoothing": 0.05}, "apo_zero": {}, "apo_down": {},
    "discopop": {"tau": 0.05}, "sft": {}, "sigmoid_norm": {},
}


def _ours(name, **hyper):
  fn = losses.get(name)
  if "beta" in registry.hyper_parameters(name):
    hyper = {"beta": BETA, **hyper}
  return float(fn(LP, REF, None, lengths=N, **hyper))


def test_every_dpo_trainer_loss_type_is_listed_and_resolves():
  dpo_rows = {t.loss_type: t.objective for t in registry.TRL_NAMES if t.trainer == "DPOTrainer"}
  assert set(dpo_rows) == set(DPO_SETTINGS)
  for alias, objective in dpo_rows.items():
    assert losses.spec(alias).name == objective
    assert alias == objective or alias in losses.spec(objective).aliases
  assert losses.spec("sigmoid").name == "dpo" and losses.spec("robust").name == "rdpo"
  assert losses.get("aot") is losses.get("aot_paired")


@pytest.mark.parametrize("loss_type", sorted(DPO_SETTINGS))
def test_dpo_trainer_names_compute_trls_loss(loss_type):
  settings = DPO_SETTINGS[loss_type]
  np.testing.assert_allclose(_ours(loss_type, **settings), _trl_dpo(loss_type, **settings),
                             rtol=1e-5, atol=1e-6)


def test_kto_trainer_names_compute_trls_loss():
  lp, ref = LP.reshape(1, -1), REF.reshape(1, -1)
  labels = np.tile([1.0, 0.0], B).reshape(1, -1)
  kl_lp, kl_ref = np.roll(lp, 1, axis=-1) + 0.5, np.roll(ref, 1, axis=-1)
  rho, desirable = (lp - ref)[0], labels[0] == 1
  kl = max(0.0, float(np.mean(kl_lp - kl_ref)))
  kto = np.where(desirable, 1 - _sig(BETA * (rho - kl)), 1 - _sig(BETA * (kl - rho)))
  apo = np.where(desirable, 1 - _sig(BETA * rho), _sig(BETA * rho))
  ours_kto = losses.get("kto")(lp, ref, labels, kl_logps=kl_lp, kl_ref_logps=kl_ref, beta=BETA)
  ours_apo = losses.get("apo_zero_unpaired")(lp, ref, labels, beta=BETA)
  np.testing.assert_allclose(float(ours_kto), np.mean(kto), rtol=1e-5)
  np.testing.assert_allclose(float(ours_apo), np.mean(apo), rtol=1e-5)


def _trl_cpo(loss_type, cpo_alpha=1.0, simpo_gamma=0.5, alpha=0.0, label_smoothing=0.0):
  """TRL's `CPOTrainer.cpo_loss` mean plus `cpo_alpha` × the chosen token-mean NLL."""
  averaged = loss_type in ("ipo", "simpo")
  lp = LP / N if averaged else LP
  if alpha:
    lp = (1 - np.exp(-alpha * lp)) / alpha
  logits = lp[:, 0] - lp[:, 1]
  if loss_type == "simpo":
    logits = logits - simpo_gamma / BETA
  if loss_type in ("sigmoid", "simpo"):
    out = (-_logsig(BETA * logits) * (1 - label_smoothing)
           - _logsig(-BETA * logits) * label_smoothing)
  elif loss_type == "hinge":
    out = np.maximum(0.0, 1 - BETA * logits)
  else:
    out = (logits - 1 / (2 * BETA)) ** 2
  return float(np.mean(out) + cpo_alpha * -np.sum(LP[:, 0]) / np.sum(N[:, 0]))


@pytest.mark.parametrize("margin", ["sigmoid", "hinge", "ipo", "simpo"])
def test_cpo_trainer_loss_types_are_cpo_contrastive_margins(margin):
  np.testing.assert_allclose(
      _ours("cpo_contrastive", margin=margin, label_smoothing=0.05 * (margin != "hinge"),
            simpo_gamma=0.4),
      _trl_cpo(margin, label_smoothing=0.05 * (margin != "hinge"), simpo_gamma=0.4), rtol=1e-5)


def test_cpo_trainer_simpo_without_nll_is_simpo_and_alphapo():
  trl = _trl_cpo("simpo", cpo_alpha=0.0, simpo_gamma=0.4)
  np.testing.assert_allclose(_ours("simpo", gamma=0.4), trl, rtol=1e-5)
  trl = _trl_cpo("simpo", cpo_alpha=0.0, simpo_gamma=0.4, alpha=0.2)
  np.testing.assert_allclose(_ours("alphapo", gamma=0.4, alpha=0.2), trl, rtol=1e-5)


def test_orpo_trainer_is_orpo():
  a = LP / N
  log_odds = (a[:, 0] - a[:, 1]) - (np.log1p(-np.exp(a[:, 0])) - np.log1p(-np.exp(a[:, 1])))
  trl = -np.sum(LP[:, 0]) / np.sum(N[:, 0]) - BETA * np.mean(_logsig(log_odds))
  np.testing.assert_allclose(_ours("orpo"), trl, rtol=1e-5)


def test_every_trl_row_names_a_registered_objective():
  for t in registry.TRL_NAMES:
    assert t.objective in losses.names(), t
    if t.trainer in registry.TRL_ALIAS_TRAINERS:
      assert losses.spec(t.loss_type).name == t.objective, t


def test_unknown_names_suggest_the_closest_first():
  with pytest.raises(KeyError) as info:
    losses.get("dpoo")
  message = info.value.args[0]
  assert message.startswith("Unknown objective 'dpoo'. Did you mean 'dpo'")
  assert message.index("Did you mean") < message.index("Known objectives: ")
  assert "lipo_lambda" in message and "sigmoid" in message  # all names, aliases included
  with pytest.raises(KeyError, match="Did you mean 'robust'"):
    losses.spec("robst")
  with pytest.raises(KeyError, match=r"^\"Unknown objective 'zzzz'. Known objectives: "):
    losses.spec("zzzz")


def test_hyper_parameters_are_the_keyword_settings_without_inputs():
  assert registry.hyper_parameters("dpo") == {
      "beta": 0.1, "label_smoothing": 0.0, "fdiv": "reverse_kl"}
  assert registry.hyper_parameters("sigmoid") == registry.hyper_parameters("dpo")
  assert registry.hyper_parameters("kto") == {
      "beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0}
  assert registry.hyper_parameters("bco") == {"delta": "pooled", "beta": 0.1}
  assert registry.hyper_parameters("sft") == {}
  assert registry.hyper_parameters("slic_hf")["delta"] is inspect.Parameter.empty
  names = registry.hyper_parameter_names()
  assert names == sorted(names) and {"beta", "label_smoothing", "tau", "cpo_alpha"} <= set(names)
  assert not {"where", "weights", "lengths", "reduce_fn", "state", "kl_logps"} & set(names)


def test_check_hyper_parameters():
  registry.check_hyper_parameters("robust", {"beta": 1, "label_smoothing": 0.2})
  registry.check_hyper_parameters("dpo", {"fdiv": lambda rho: rho})  # a callable f-divergence
  registry.check_hyper_parameters("grpo", {"epsilon_high": 0.28, "delta": None})  # None defaults
  with pytest.raises(ValueError, match=r"'dpo' takes no hyper-parameter\(s\) \['gamma'\]; its "
                     r"hyper-parameters: beta=0.1, label_smoothing=0.0, fdiv='reverse_kl'"):
    registry.check_hyper_parameters("dpo", {"beta": 0.1, "gamma": 1.0})
  with pytest.raises(ValueError, match="hyper-parameters: none"):
    registry.check_hyper_parameters("sft", {"beta": 0.1})
  with pytest.raises(TypeError, match="label_smoothing='abc' must be a number"):
    registry.check_hyper_parameters("dpo", {"label_smoothing": "abc"})
  with pytest.raises(TypeError, match="beta=True must be a number"):
    registry.check_hyper_parameters("dpo", {"beta": True})
  with pytest.raises(TypeError, match="rax_scaled=1 must be a bool"):
    registry.check_hyper_parameters("lipo_lambda", {"rax_scaled": 1})
  with pytest.raises(KeyError, match="Did you mean 'dpo'"):
    registry.check_hyper_parameters("dpoo", {})
