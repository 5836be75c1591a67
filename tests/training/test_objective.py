"""Training losses over a log-prob function: SFT and registered preference objectives.

Expected values are worked by hand or evaluated in numpy from the papers' formulas. KTO's
mismatched pairs and BCO's running moments are tested in `tests/training/test_unpaired.py`.
"""

import math

import numpy as np
import pytest

from alignment.training import objective

BETA = 0.5


def _logp_fn(params, batch):
  """A 'policy' whose summed log-probs are `s·x` and whose token counts are the lengths."""
  return params["s"] * batch["x"], batch["response_lengths"]


def _pairs(x, ref=None, where=None):
  """A batch of pairs: `x [B, 2]` (slot 0 chosen), lengths (2, 4) in every row."""
  x = np.asarray(x, np.float32)
  batch = {
      "x": x,
      "labels": np.tile(np.float32([1, 0]), (len(x), 1)),
      "where": np.ones(x.shape, bool) if where is None else np.asarray(where),
      "response_lengths": np.tile(np.int32([2, 4]), (len(x), 1)),
  }
  if ref is not None:
    batch["ref_logps"] = np.asarray(ref, np.float32)
  return batch


def _log1p_exp(z):
  """−log σ(−z) = log(1 + e^z)."""
  return np.log1p(np.exp(z))


def _dpo_sum(logps, ref, beta=BETA):
  """Σ over pairs of −log σ(β·((lp_w − lr_w) − (lp_l − lr_l))): DPO, *Direct Preference
  Optimization: Your Language Model is Secretly a Reward Model* (Rafailov et al., NeurIPS 2023)."""
  h = (logps[:, 0] - ref[:, 0]) - (logps[:, 1] - ref[:, 1])
  return float(np.sum(_log1p_exp(-beta * h)))


X = np.array([[-2.0, -5.0], [-4.0, -3.0], [-1.0, -1.5]])
REF = np.array([[-3.0, -4.0], [-3.5, -3.5], [-2.0, -1.0]])


def test_sft_loss_is_the_masked_token_sum_and_count():
  # Valid slots: (0, 0), (1, 0), (1, 1): Σ −lp = 1 + 3 + 4 = 8 over 2 + 4 + 5 = 11 tokens.
  batch = {"x": np.array([[-1.0, -2.0], [-3.0, -4.0]], np.float32),
           "response_lengths": np.array([[2, 3], [4, 5]], np.int32),
           "where": np.array([[True, False], [True, True]])}
  (total, count), (state, aux) = objective.sft_loss(_logp_fn)({"s": 1.0}, batch, "s", None, None)
  assert (float(total), float(count)) == (8.0, 11.0)
  assert [float(v) for v in aux["nll"]] == [8.0, 11.0]
  assert state == "s"  # the loss state passes through


def test_dpo_from_cached_reference_log_probs_is_the_formula():
  loss_fn = objective.preference_loss("dpo", _logp_fn, hyper_parameters={"beta": BETA})
  (total, count), (_, aux) = loss_fn({"s": 1.0}, _pairs(X, REF), (), None, None)
  assert float(total) == pytest.approx(_dpo_sum(X, REF), rel=1e-6)
  assert float(count) == 3.0
  # Implicit rewards β·(lp − lr) of the chosen: 0.5·(1, −0.5, 1): mean 0.25 over 3 lists.
  chosen_sum, chosen_count = aux["rewards/chosen"]
  assert float(chosen_sum) / float(chosen_count) == pytest.approx(0.25)
  # A masked pair is left out of the sum and the count.
  where = np.array([[True, True], [False, False], [True, True]])
  (total, count), _ = loss_fn({"s": 1.0}, _pairs(X, REF, where), (), None, None)
  assert float(total) == pytest.approx(_dpo_sum(X[[0, 2]], REF[[0, 2]]), rel=1e-6)
  assert float(count) == 2.0


def test_forward_reference_reads_the_frozen_parameters():
  # reference="forward": the reference log-probs are logp_fn(frozen) = 0.25·x.
  loss_fn = objective.preference_loss("dpo", _logp_fn, reference="forward",
                                      hyper_parameters={"beta": BETA}, ref_logp_fn=_logp_fn)
  (total, _), _ = loss_fn({"s": 1.0}, _pairs(X), (), {"s": 0.25}, None)
  assert float(total) == pytest.approx(_dpo_sum(X, 0.25 * X), rel=1e-6)


def test_lora_policy_composes_trainable_and_frozen_parameters():
  # Policy = base + adapter; the reference is the base alone. A zero adapter is the reference:
  # every pair's loss is −log σ(0) = ln 2. An adapter of 0.5 gives policy 1.5·x, reference x.
  loss_fn = objective.preference_loss(
      "dpo", _logp_fn, reference="lora", hyper_parameters={"beta": BETA}, ref_logp_fn=_logp_fn,
      policy_params=lambda adapter, base: {"s": base["s"] + adapter["s"]})
  (total, _), _ = loss_fn({"s": 0.0}, _pairs(X), (), {"s": 1.0}, None)
  assert float(total) == pytest.approx(3 * math.log(2.0), rel=1e-6)
  (total, _), _ = loss_fn({"s": 0.5}, _pairs(X), (), {"s": 1.0}, None)
  assert float(total) == pytest.approx(_dpo_sum(1.5 * X, X), rel=1e-6)


@pytest.mark.parametrize("reference", ["none", "cache"])
def test_reference_free_objective_takes_lengths_from_the_batch(reference):
  # SimPO (*SimPO: Simple Preference Optimization with a Reference-Free Reward*, Meng et al.,
  # NeurIPS 2024): −log σ(β·(lp_w/2 − lp_l/4) − γ), lengths (2, 4); no reference is read,
  # whatever the mode (the batch has no ref_logps).
  loss_fn = objective.preference_loss("simpo", _logp_fn, reference=reference,
                                      hyper_parameters={"beta": 2.0, "gamma": 0.5})
  (total, count), _ = loss_fn({"s": 1.0}, _pairs(X), (), None, None)
  margin = 2.0 * (X[:, 0] / 2 - X[:, 1] / 4) - 0.5
  assert float(total) == pytest.approx(float(np.sum(_log1p_exp(-margin))), rel=1e-6)
  assert float(count) == 3.0


def test_cached_reference_missing_from_the_batch_is_named():
  loss_fn = objective.preference_loss("dpo", _logp_fn)
  with pytest.raises(ValueError, match="no 'ref_logps'.*cached_reference_logps"):
    loss_fn({"s": 1.0}, _pairs(X), (), None, None)


def test_check_objective_supported():
  spec = objective.check_objective_supported("lipo_lambda", "cache")
  assert spec.needs_reference and callable(spec.fn)
  with pytest.raises(ValueError, match="reference must be one of"):
    objective.check_objective_supported("dpo", "disk")
  with pytest.raises(ValueError, match=r"needs inputs \['preference_scores'\]"):
    objective.check_objective_supported("gpo", "forward")
  with pytest.raises(ValueError, match="cannot be cached"):
    objective.check_objective_supported("kto", "cache")


def test_unknown_objective_lists_known_names():
  with pytest.raises(KeyError, match="Known objectives: .*dpo"):
    objective.preference_loss("not_a_loss", _logp_fn)


def test_objective_with_a_reference_refuses_reference_none():
  with pytest.raises(ValueError, match="needs a reference"):
    objective.preference_loss("dpo", _logp_fn, reference="none")
