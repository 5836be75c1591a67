"""Tests of alignment.data.raters: the choice models, flip rates and the noiseless limit.

Statistical checks draw N samples and accept an empirical frequency within 4 standard errors
(`4·sqrt(p(1 − p)/N)`) of the model's probability: a false failure has probability ~6e-5 per check,
and the seeds are fixed, so the tests are deterministic.
"""

import itertools
import math

import numpy as np
import pytest

from alignment.data import raters

N = 200_000


def _sigmoid(x):
  return 1.0 / (1.0 + math.exp(-x))


def _assert_frequency(successes, n, p):
  tolerance = 4.0 * math.sqrt(max(p * (1.0 - p), 1e-12) / n)
  assert abs(np.sum(successes) / n - p) <= tolerance, (np.sum(successes) / n, p, tolerance)


def _plackett_luce_probability(rewards, permutation, temperature):
  """Π_i exp(r_{π_i}/T) / Σ_{j≥i} exp(r_{π_j}/T), in float64, term by term."""
  u = [r / temperature for r in rewards]
  p = 1.0
  for i, item in enumerate(permutation):
    p *= math.exp(u[item]) / sum(math.exp(u[j]) for j in permutation[i:])
  return p


# ---------------------------------------------------------------------------------------------
# Bradley–Terry pairs


@pytest.mark.parametrize(
    "margin, temperature, flip_rate",
    [(1.0, 1.0, 0.0), (0.3, 0.5, 0.0), (2.0, 1.0, 0.2), (-1.5, 2.0, 0.1)]
)
def test_bradley_terry_matches_model(margin, temperature, flip_rate):
  # E.g. margin 1, T = 1, ε = 0: p = σ(1) = 0.7311; ε = 0.2, margin 2: 0.8·σ(2) + 0.2·σ(−2).
  prefer_a = raters.bradley_terry_pair(
      np.full(N, margin), np.zeros(N), 0, temperature=temperature, flip_rate=flip_rate
  )
  assert prefer_a.shape == (N,) and prefer_a.dtype == bool
  p = (1 - flip_rate) * _sigmoid(margin / temperature) + flip_rate * _sigmoid(-margin / temperature)
  _assert_frequency(prefer_a, N, p)


def test_bradley_terry_zero_temperature_is_argmax_and_flip_rate_is_honoured():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=N), rng.normal(size=N)
  np.testing.assert_array_equal(raters.bradley_terry_pair(a, b, 1, temperature=0.0), a > b)
  wrong = raters.bradley_terry_pair(a, b, 2, temperature=0.0, flip_rate=0.25) != (a > b)
  _assert_frequency(wrong, N, 0.25)
  np.testing.assert_array_equal(
      raters.bradley_terry_pair(a, b, 3, temperature=0.0, flip_rate=1.0), a < b
  )
  # Ties at T = 0 are a fair coin.
  _assert_frequency(raters.bradley_terry_pair(np.ones(N), np.ones(N), 4, temperature=0.0), N, 0.5)


def test_bradley_terry_small_temperature_approaches_argmax_without_overflow():
  prefer_a = raters.bradley_terry_pair([1e3, -1e3, 0.01], [0.0, 0.0, 0.0], 0, temperature=1e-6)
  assert prefer_a.tolist() == [True, False, True]


def test_bradley_terry_broadcasts_and_is_deterministic_by_seed():
  a = np.linspace(-2, 2, 12).reshape(3, 4)
  first = raters.bradley_terry_pair(a, 0.0, 5)
  assert first.shape == (3, 4)
  np.testing.assert_array_equal(first, raters.bradley_terry_pair(a, 0.0, np.random.default_rng(5)))
  draws = [raters.bradley_terry_pair(np.zeros(64), 0.0, s) for s in (1, 2)]
  assert not np.array_equal(*draws)


# ---------------------------------------------------------------------------------------------
# Plackett–Luce rankings


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_plackett_luce_permutation_frequencies_match_model(temperature):
  rewards = [0.5, 1.2, -0.3]
  ranking = raters.plackett_luce_ranking(np.tile(rewards, (N, 1)), 0, temperature=temperature)
  assert ranking.shape == (N, 3)
  for permutation in itertools.permutations(range(3)):
    hits = np.all(ranking == permutation, axis=1)
    _assert_frequency(hits, N, _plackett_luce_probability(rewards, permutation, temperature))


def test_plackett_luce_with_two_items_is_bradley_terry_with_flips():
  # K = 2, margin 0.8, T = 1, ε = 0.1: P(item 0 first) = 0.9·σ(0.8) + 0.1·σ(−0.8).
  ranking = raters.plackett_luce_ranking(np.tile([0.8, 0.0], (N, 1)), 3, flip_rate=0.1)
  _assert_frequency(ranking[:, 0] == 0, N, 0.9 * _sigmoid(0.8) + 0.1 * _sigmoid(-0.8))


def test_plackett_luce_zero_temperature_sorts_and_flip_reverses():
  rng = np.random.default_rng(1)
  rewards = rng.normal(size=(N // 10, 5))
  expected = np.argsort(-rewards, axis=1)
  np.testing.assert_array_equal(raters.plackett_luce_ranking(rewards, 2, temperature=0.0), expected)
  noisy = raters.plackett_luce_ranking(rewards, 3, temperature=0.0, flip_rate=0.3)
  reversed_ = np.all(noisy == expected[:, ::-1], axis=1)
  assert np.all(reversed_ | np.all(noisy == expected, axis=1))
  _assert_frequency(reversed_, len(rewards), 0.3)


def test_plackett_luce_zero_temperature_breaks_ties_uniformly():
  ranking = raters.plackett_luce_ranking(np.tile([1.0, 3.0, 1.0, 1.0], (N, 1)), 4, temperature=0.0)
  assert np.all(ranking[:, 0] == 1)
  for item in (0, 2, 3):
    _assert_frequency(ranking[:, 1] == item, N, 1 / 3)


def test_plackett_luce_high_temperature_is_uniform_and_batch_shapes():
  ranking = raters.plackett_luce_ranking(np.tile([0.0, 1.0, 2.0, 3.0], (N, 1)), 5, temperature=1e9)
  _assert_frequency(ranking[:, 0] == 3, N, 0.25)
  assert raters.plackett_luce_ranking(np.zeros((2, 3, 4)), 0).shape == (2, 3, 4)


def test_ranking_labels():
  # Ranking [2, 0, 1]: item 2 best (label 2), item 0 next (1), item 1 last (0).
  np.testing.assert_array_equal(raters.ranking_labels([2, 0, 1]), [1.0, 0.0, 2.0])
  rewards = np.random.default_rng(2).normal(size=(50, 6))
  labels = raters.ranking_labels(raters.plackett_luce_ranking(rewards, 0, temperature=0.0))
  assert labels.dtype == np.float32
  # Noiseless labels order the items exactly as the rewards do.
  np.testing.assert_array_equal(np.argsort(labels, axis=1), np.argsort(rewards, axis=1))
  with pytest.raises(ValueError, match="permutation of 0..2"):
    raters.ranking_labels([0, 0, 1])


# ---------------------------------------------------------------------------------------------
# Binary thumbs


@pytest.mark.parametrize(
    "reward, temperature, threshold, flip_rate",
    [(1.0, 1.0, 0.0, 0.0), (2.0, 0.5, 2.5, 0.0), (0.3, 1.0, -1.0, 0.15)],
)
def test_binary_thumbs_matches_model(reward, temperature, threshold, flip_rate):
  up = raters.binary_thumbs(
      np.full(N, reward), 0, temperature=temperature, threshold=threshold, flip_rate=flip_rate
  )
  z = (reward - threshold) / temperature
  _assert_frequency(up, N, (1 - flip_rate) * _sigmoid(z) + flip_rate * _sigmoid(-z))


def test_binary_thumbs_zero_temperature_and_flip_rate():
  rewards = np.random.default_rng(3).uniform(0, 3, size=N)
  np.testing.assert_array_equal(
      raters.binary_thumbs(rewards, 1, temperature=0.0, threshold=1.5), rewards > 1.5
  )
  wrong = raters.binary_thumbs(rewards, 2, temperature=0.0, threshold=1.5, flip_rate=0.05)
  _assert_frequency(wrong != (rewards > 1.5), N, 0.05)


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: raters.bradley_terry_pair([1.0], [0.0], 0, temperature=-1.0), "temperature"),
        (lambda: raters.bradley_terry_pair([1.0], [0.0], 0, flip_rate=1.5), "flip_rate"),
        (lambda: raters.bradley_terry_pair([1.0, np.nan], [0.0, 0.0], 0),
         r"rewards_a has a non-finite value nan at index \(1,\)"),
        (lambda: raters.plackett_luce_ranking([[0.0, np.inf]], 0),
         r"rewards has a non-finite value inf at index \(0, 1\)"),
        (lambda: raters.plackett_luce_ranking(1.0, 0), r"shape \[..., K\]"),
        (lambda: raters.binary_thumbs([1.0], 0, threshold=np.nan), "threshold"),
    ],
)
def test_bad_input_is_reported(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_rng_must_be_generator_or_seed():
  with pytest.raises(TypeError, match="numpy Generator or an int seed"):
    raters.binary_thumbs([1.0], 0.5)


def test_preference_probability_by_hand():
  # T = 0.05, r_w − r_l = 0.05: σ(1) = 0.7310586; with ε = 0.1: 0.9·0.7310586 + 0.1·0.2689414.
  alpha = raters.preference_probability([[0.15, 0.1], [0.1, 0.15], [0.2, 0.2]],
                                        temperature=0.05, flip_rate=0.0)
  np.testing.assert_allclose(alpha, [0.7310586, 0.2689414, 0.5], atol=1e-7)
  flipped = raters.preference_probability([0.15, 0.1], temperature=0.05, flip_rate=0.1)
  assert flipped == pytest.approx(0.9 * 0.7310586 + 0.1 * 0.2689414, abs=1e-7)
  # T = 0: the step function, a fair coin on ties; ε = 1 inverts it.
  np.testing.assert_array_equal(raters.preference_probability(
      [[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], temperature=0.0, flip_rate=0.0), [1.0, 0.0, 0.5])
  np.testing.assert_array_equal(raters.preference_probability(
      [[1.0, 0.0]], temperature=0.0, flip_rate=1.0), [0.0])
  with pytest.raises(ValueError, match=r"\[..., 2\]"):
    raters.preference_probability([1.0, 2.0, 3.0], temperature=1.0, flip_rate=0.0)


def test_preference_probability_matches_the_plackett_luce_rater():
  # Monte Carlo of the library's rater: the frequency of "slot 0 ranked first" is α (4 σ).
  rewards = np.array([[0.1, 0.0], [0.0, 0.05], [0.3, 0.3], [0.52, 0.5]])
  n = 40_000
  for flip_rate in (0.0, 0.2):
    ranking = raters.plackett_luce_ranking(np.repeat(rewards[None], n, axis=0), 0,
                                           temperature=0.05, flip_rate=flip_rate)
    frequency = np.mean(ranking[..., 0] == 0, axis=0)
    alpha = raters.preference_probability(rewards, temperature=0.05, flip_rate=flip_rate)
    np.testing.assert_array_less(np.abs(frequency - alpha),
                                 4 * np.sqrt(alpha * (1 - alpha) / n) + 1e-9)
