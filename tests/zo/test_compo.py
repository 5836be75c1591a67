"""ComPO: noisy pairs, comparison votes, the sparsified direction and its two update rules.

Paper: *ComPO: Preference Alignment via Comparison Oracles* (Chen, Chen, Yin, Lin; NeurIPS 2025).
The output layer is a toy log-linear model whose margin gradient is known, so the estimated
direction can be checked against it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.zo import compo


def test_noisy_pair_mask_and_votes_by_hand():
  chosen = jnp.array([-10.0, -5.0, -3.0, -7.0])
  rejected = jnp.array([-11.0, -9.0, -2.0, -7.0])
  # margins 1, 4, -1, 0 -> only the first is noisy with threshold 3 (0 < margin < 3).
  np.testing.assert_array_equal(compo.noisy_pair_mask(chosen, rejected, noise_threshold=3.0),
                                [True, False, False, False])
  where = jnp.array([True, True, False, False])
  base = (chosen, rejected)
  # Pair 0: chosen up (-9.9 > -10), rejected down (-11.2 < -11): strict and relaxed win.
  strict, relaxed = compo.comparison_votes(
      base, (chosen.at[0].set(-9.9), rejected.at[0].set(-11.2)), where)
  assert bool(strict) and bool(relaxed)
  # Pair 0: chosen up by 0.1, rejected up by 0.05: margin up -> relaxed only.
  strict, relaxed = compo.comparison_votes(
      base, (chosen.at[0].set(-9.9), rejected.at[0].set(-10.95)), where)
  assert not bool(strict) and bool(relaxed)
  # The same win on a masked pair (2) counts for nothing.
  strict, relaxed = compo.comparison_votes(
      base, (chosen.at[2].set(-2.9), rejected.at[2].set(-2.5)), where)
  assert not bool(strict) and not bool(relaxed)


def _toy_output_layer(seed=0, vocab=6, dim=4, pairs=3):
  """logp(token | h) = log_softmax(h W^T)[token] for one-token completions."""
  rng = np.random.default_rng(seed)
  hidden = jnp.asarray(rng.normal(size=(pairs, dim)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(vocab, dim)) * 0.1, jnp.float32)
  chosen_tok, rejected_tok = jnp.array([0, 1, 2]), jnp.array([3, 4, 5])

  def logp_fn(params):
    logp = jax.nn.log_softmax(hidden @ params["W"].T, axis=-1)
    rows = jnp.arange(pairs)
    return logp[rows, chosen_tok], logp[rows, rejected_tok]

  return {"W": w}, logp_fn


def test_compo_direction_points_against_the_margin_gradient_and_step_is_accepted():
  params, logp_fn = _toy_output_layer()
  where = jnp.ones(3, bool)
  margin = lambda p: jnp.sum(jnp.subtract(*logp_fn(p)))  # noqa: E731
  new, info = compo.compo_step(params, jax.random.PRNGKey(0), logp_fn, where=where,
                               num_perturbations=256, mu=1e-3, sparsity_threshold=0.0,
                               negone_num_threshold=10, chunk_size=64)
  assert int(info["num_strict"]) >= 10 and not bool(info["relaxed"])
  step = float(info["step_size"])
  assert step > 0
  g = (params["W"] - new["W"]) / step  # W' = W - s * g_hat, |g_hat| = 1
  np.testing.assert_allclose(jnp.linalg.norm(g), 1.0, rtol=1e-4)
  grad = jax.grad(margin)(params)["W"]
  cosine = jnp.sum(g * grad) / jnp.linalg.norm(grad)
  assert float(cosine) < -0.2  # -g_hat is an ascent direction of the margin
  strict, _ = compo.comparison_votes(logp_fn(params), logp_fn(new), where)
  assert bool(strict)  # the accepted step passes the test it was selected by
  assert float(step) in compo.STEP_SIZES


def test_direction_does_not_depend_on_the_chunk_size():
  params, logp_fn = _toy_output_layer()
  kwargs = dict(where=jnp.ones(3, bool), num_perturbations=64, mu=1e-3, sparsity_threshold=0.0,
                negone_num_threshold=5)
  g8, info8 = compo.compo_direction(params, jax.random.PRNGKey(3), logp_fn, chunk_size=8,
                                    **kwargs)
  g64, info64 = compo.compo_direction(params, jax.random.PRNGKey(3), logp_fn, chunk_size=64,
                                      **kwargs)
  np.testing.assert_allclose(g8["W"], g64["W"], rtol=1e-5, atol=1e-7)
  assert int(info8["num_strict"]) == int(info64["num_strict"])
  assert int(info8["num_relaxed"]) == int(info64["num_relaxed"])


def test_strict_wins_are_relaxed_wins_and_the_test_switches_at_the_threshold():
  # Chosen up and rejected down implies the margin up: every strict −1 vote is a relaxed one.
  params, logp_fn = _toy_output_layer(seed=1)
  kwargs = dict(where=jnp.ones(3, bool), num_perturbations=64, mu=1e-3, chunk_size=16,
                sparsity_threshold=0.0)
  _, strict = compo.compo_direction(params, jax.random.PRNGKey(1), logp_fn,
                                    negone_num_threshold=0, **kwargs)
  assert int(strict["num_relaxed"]) >= int(strict["num_strict"]) > 0
  assert not bool(strict["relaxed"])
  # More strict votes required than perturbations drawn: the relaxed test is used.
  _, relaxed = compo.compo_direction(params, jax.random.PRNGKey(1), logp_fn,
                                     negone_num_threshold=65, **kwargs)
  assert bool(relaxed["relaxed"])
  assert int(relaxed["num_strict"]) == int(strict["num_strict"])


def test_sparsification_zeroes_small_entries_of_the_unit_direction():
  params, logp_fn = _toy_output_layer()
  kwargs = dict(where=jnp.ones(3, bool), num_perturbations=64, mu=1e-3, chunk_size=16,
                negone_num_threshold=0)
  dense, _ = compo.compo_direction(params, jax.random.PRNGKey(2), logp_fn,
                                   sparsity_threshold=0.0, **kwargs)
  np.testing.assert_allclose(jnp.linalg.norm(dense["W"]), 1.0, rtol=1e-5)
  threshold = float(jnp.median(jnp.abs(dense["W"])))
  sparse, _ = compo.compo_direction(params, jax.random.PRNGKey(2), logp_fn,
                                    sparsity_threshold=threshold, **kwargs)
  keep = np.abs(np.asarray(dense["W"])) >= threshold
  np.testing.assert_array_equal(sparse["W"], np.where(keep, dense["W"], 0.0))
  assert 0 < keep.sum() < keep.size


def test_no_noisy_pairs_leave_the_weights_unchanged():
  # Without a valid pair no perturbation and no step can win the comparison.
  params, logp_fn = _toy_output_layer()
  new, info = compo.compo_step(params, jax.random.PRNGKey(0), logp_fn, where=jnp.zeros(3, bool),
                               num_perturbations=32, mu=1e-3, negone_num_threshold=1,
                               chunk_size=16)
  assert int(info["num_strict"]) == int(info["num_relaxed"]) == 0
  assert float(info["step_size"]) == 0.0
  np.testing.assert_array_equal(new["W"], params["W"])


def test_compo_official_applies_eta_times_the_vote_fraction_or_nothing():
  params, logp_fn = _toy_output_layer()
  new, info = compo.compo_step_official(params, jax.random.PRNGKey(0), logp_fn,
                                        where=jnp.ones(3, bool), num_perturbations=64,
                                        negone_num_threshold=65, chunk_size=16)
  assert not bool(info["applied"])
  np.testing.assert_array_equal(new["W"], params["W"])
  new, info = compo.compo_step_official(params, jax.random.PRNGKey(0), logp_fn,
                                        where=jnp.ones(3, bool), num_perturbations=64,
                                        negone_num_threshold=1, sparsity_threshold=0.0,
                                        mu=1e-3, learning_rate=0.5, chunk_size=16)
  # Applied: W moves by eta * (n_neg / M) along -g_hat (|g_hat| = 1).
  assert bool(info["applied"]) and int(info["num_strict"]) >= 1
  step = float(jnp.linalg.norm(new["W"] - params["W"]))
  np.testing.assert_allclose(step, 0.5 * int(info["num_strict"]) / 64, rtol=1e-4)
  np.testing.assert_allclose(float(info["step_size"]), step, rtol=1e-4)


def test_perturbation_count_must_be_a_multiple_of_the_chunk_size():
  params, logp_fn = _toy_output_layer()
  with pytest.raises(ValueError, match="multiple of"):
    compo.compo_direction(params, jax.random.PRNGKey(0), logp_fn, where=jnp.ones(3, bool),
                          num_perturbations=10, chunk_size=4)
