"""Simulated raters: noisy preference labels from a task's true rewards (host-side numpy).

Each rater has a `temperature` T >= 0 (noise of the choice model; T = 0 is the noiseless argmax,
ties broken uniformly at random) and a `flip_rate` ε in [0, 1] (after the choice, the label is
inverted with probability ε: a careless or adversarial rater).

- `bradley_terry_pair`: `P(a ≻ b) = (1 − ε)·σ((r_a − r_b)/T) + ε·σ((r_b − r_a)/T)`.
- `plackett_luce_ranking`: a ranking of K responses drawn from Plackett–Luce with utilities r/T
  (`P(π) = Π_i exp(r_{π_i}/T) / Σ_{j≥i} exp(r_{π_j}/T)`), sampled with the Gumbel trick
  (`argsort(−(r/T + g))`, g i.i.d. Gumbel(0, 1)); with probability ε the ranking is reversed. For
  K = 2 this is exactly `bradley_terry_pair`. `ranking_labels` turns rankings into graded labels.
- `binary_thumbs`: `P(up) = (1 − ε)·σ((r − τ)/T) + ε·σ((τ − r)/T)` for a threshold τ (KTO-style
  unpaired labels).
- `preference_probability`: the probability α that a rater prefers the first response of a pair.

Randomness comes from an explicit `numpy.random.Generator` or an integer seed.
"""

from __future__ import annotations

from typing import Union

import numpy as np

Rng = Union[np.random.Generator, int]


def _generator(rng: Rng) -> np.random.Generator:
  if isinstance(rng, np.random.Generator):
    return rng
  if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
    return np.random.default_rng(int(rng))
  raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng)}.")


def _check(rater: str, temperature: float, flip_rate: float, **arrays: np.ndarray) -> None:
  """Raises a ValueError naming the rater, the argument and the first bad index."""
  if not (np.isfinite(temperature) and temperature >= 0):
    raise ValueError(f"{rater}: temperature must be finite and >= 0, got {temperature}.")
  if not 0.0 <= flip_rate <= 1.0:
    raise ValueError(f"{rater}: flip_rate must be in [0, 1], got {flip_rate}.")
  for name, x in arrays.items():
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
      raise ValueError(
          f"{rater}: {name} has a non-finite value {x[tuple(bad[0])]} at index "
          f"{tuple(int(i) for i in bad[0])}."
      )


def _preference_probability(margin: np.ndarray, temperature: float) -> np.ndarray:
  """`σ(margin / T)`; for T = 0 the step function with value 1/2 at 0."""
  if temperature == 0:
    return np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))
  return 0.5 * (1.0 + np.tanh(0.5 * margin / temperature))  # σ, without overflow


def preference_probability(rewards, *, temperature: float, flip_rate: float) -> np.ndarray:
  """α = P(the rater prefers slot 0 to slot 1) for pairs of true rewards `[..., 2]`.

  `α = (1 − ε)·σ((r_0 − r_1)/T) + ε·σ((r_1 − r_0)/T)` (T = 0: 1, 1/2, 0 as `r_0 >, =, < r_1`),
  the probability of `bradley_terry_pair` and of slot 0 ranked first by `plackett_luce_ranking`
  (it does so iff `r_0/T + g_0 > r_1/T + g_1` with g i.i.d. Gumbel(0, 1), and `g_1 − g_0` is
  Logistic(0, 1)). With slot 0 the chosen response this is the "fraction of raters preferring
  y_w" of the idealized ranking accuracy (`alignment.metrics.idealized_ranking_accuracy`).

  Args:
    rewards: true rewards `[..., 2]`.
    temperature: T >= 0.
    flip_rate: ε in [0, 1].

  Returns:
    float64 `[...]`.
  """
  r = np.asarray(rewards, np.float64)
  if r.ndim < 1 or r.shape[-1] != 2:
    raise ValueError(f"preference_probability: rewards must be [..., 2], got {r.shape}.")
  _check("preference_probability", temperature, flip_rate, rewards=r)
  p = _preference_probability(r[..., 0] - r[..., 1], temperature)
  return (1.0 - flip_rate) * p + flip_rate * (1.0 - p)


def _flipped_bernoulli(
    p: np.ndarray, rng: np.random.Generator, flip_rate: float
) -> np.ndarray:
  """Draws Bernoulli(p) and inverts each draw with probability `flip_rate`."""
  choice = rng.random(p.shape) < p
  flip = rng.random(p.shape) < flip_rate
  return choice ^ flip


def bradley_terry_pair(
    rewards_a, rewards_b, rng: Rng, *, temperature: float = 1.0, flip_rate: float = 0.0
) -> np.ndarray:
  """Whether a rater prefers response a to response b, under Bradley–Terry noise.

  `P(a ≻ b) = (1 − ε)·σ((r_a − r_b)/T) + ε·(1 − σ((r_a − r_b)/T))` ("Rank analysis of incomplete
  block designs: I. The method of paired comparisons", Bradley & Terry, 1952).

  Args:
    rewards_a, rewards_b: true rewards, broadcastable to a common shape `[...]`.
    rng: a numpy Generator or an int seed.
    temperature: T >= 0; 0 prefers the higher reward (ties: a fair coin).
    flip_rate: ε, the probability that the rater's choice is inverted.

  Returns:
    bool `[...]`: True where a is preferred.
  """
  a, b = np.broadcast_arrays(np.asarray(rewards_a, np.float64), np.asarray(rewards_b, np.float64))
  _check("bradley_terry_pair", temperature, flip_rate, rewards_a=a, rewards_b=b)
  p = _preference_probability(a - b, temperature)
  return _flipped_bernoulli(p, _generator(rng), flip_rate)


def binary_thumbs(
    rewards, rng: Rng, *, temperature: float = 1.0, threshold: float = 0.0,
    flip_rate: float = 0.0,
) -> np.ndarray:
  """Thumbs up / down on single responses: `P(up) = (1 − ε)·σ((r − τ)/T) + ε·σ((τ − r)/T)`.

  Args:
    rewards: true rewards `[...]`.
    rng: a numpy Generator or an int seed.
    temperature: T >= 0; 0 gives `r > τ` (r = τ: a fair coin).
    threshold: τ, the reward at which up and down are equally likely.
    flip_rate: ε, the probability that the rater's label is inverted.

  Returns:
    bool `[...]`: True for thumbs up (a desirable response).
  """
  r = np.asarray(rewards, np.float64)
  _check("binary_thumbs", temperature, flip_rate, rewards=r)
  if not np.isfinite(threshold):
    raise ValueError(f"binary_thumbs: threshold must be finite, got {threshold}.")
  p = _preference_probability(r - threshold, temperature)
  return _flipped_bernoulli(p, _generator(rng), flip_rate)


def plackett_luce_ranking(
    rewards, rng: Rng, *, temperature: float = 1.0, flip_rate: float = 0.0
) -> np.ndarray:
  """Rankings of K responses drawn from Plackett–Luce with utilities `r / T`.

  `P(π) = Π_{i=1..K} exp(r_{π_i}/T) / Σ_{j=i..K} exp(r_{π_j}/T)` ("The analysis of permutations",
  Plackett, 1975; "Individual choice behavior", Luce, 1959), drawn as `argsort(−(r/T + g))` with
  g i.i.d. standard Gumbel; with probability ε the whole ranking is reversed (K = 2: a label flip,
  matching `bradley_terry_pair`).

  Args:
    rewards: true rewards `[..., K]`.
    rng: a numpy Generator or an int seed.
    temperature: T >= 0; 0 sorts by reward (ties in uniformly random order).
    flip_rate: ε, the probability that a list's ranking is reversed.

  Returns:
    int64 `[..., K]`: indices of the responses, best first.
  """
  r = np.asarray(rewards, np.float64)
  if r.ndim < 1:
    raise ValueError(f"plackett_luce_ranking: rewards must have shape [..., K], got {r.shape}.")
  _check("plackett_luce_ranking", temperature, flip_rate, rewards=r)
  rng = _generator(rng)
  if temperature == 0:
    # Sort by reward descending; the random secondary key breaks ties uniformly.
    ranking = np.lexsort((rng.random(r.shape), -r), axis=-1)
  else:
    ranking = np.argsort(-(r / temperature + rng.gumbel(size=r.shape)), axis=-1, kind="stable")
  reverse = rng.random(r.shape[:-1]) < flip_rate
  return np.where(reverse[..., None], ranking[..., ::-1], ranking)


def ranking_labels(ranking) -> np.ndarray:
  """Graded labels from rankings: the item at 0-based position i gets `K − 1 − i`.

  Args:
    ranking: int `[..., K]`, indices best first (a permutation of 0..K−1 in each list).

  Returns:
    float32 `[..., K]` labels in item order, higher is better (the batch `labels` convention).

  >>> ranking_labels([2, 0, 1]).tolist()
  [1.0, 0.0, 2.0]
  """
  ranking = np.asarray(ranking)
  k = ranking.shape[-1]
  if not np.array_equal(np.sort(ranking, axis=-1), np.broadcast_to(np.arange(k), ranking.shape)):
    raise ValueError(f"ranking_labels: each list must be a permutation of 0..{k - 1}.")
  labels = np.empty(ranking.shape, np.float32)
  np.put_along_axis(labels, ranking, np.arange(k - 1, -1, -1, dtype=np.float32), axis=-1)
  return labels
