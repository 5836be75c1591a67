"""Tests of alignment.data.tasks: splits, rewards, optima and demonstrations."""

import functools
import itertools

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from alignment.data import tasks
from alignment.data.tasks import base

TASK_NAMES = ["sorting", "arithmetic"]


@functools.lru_cache(maxsize=None)
def _lcs_reference(a: str, b: str) -> int:
  """Plain recursive LCS length (independent of the vectorised dynamic programme)."""
  if not a or not b:
    return 0
  if a[0] == b[0]:
    return 1 + _lcs_reference(a[1:], b[1:])
  return max(_lcs_reference(a[1:], b), _lcs_reference(a, b[1:]))


def _sorting_reward_reference(prompt: str, response: str, forbidden="7") -> float:
  """R = 2·LCS(y, t)/(|y| + n) + 2·(1 − k/n), written out independently."""
  digits = prompt[:-1]
  target = "".join(sorted(digits))
  n = len(digits)
  correctness = 2.0 * _lcs_reference(response, target) / (len(response) + n)
  k = response.count(forbidden) if forbidden else 0
  return correctness + 2.0 * (1.0 - k / n)


def _random_strings(rng, n, alphabet, max_len):
  return ["".join(rng.choice(list(alphabet), size=rng.integers(max_len + 1))) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry():
  assert tasks.task_names() == ["arithmetic", "sorting"]
  task = tasks.get_task("sorting", max_digits=6, forbidden=None)
  assert isinstance(task, tasks.SortingTask) and task.max_digits == 6
  with pytest.raises(KeyError, match="Known tasks: arithmetic, sorting"):
    tasks.get_task("sortin")
  with pytest.raises(TypeError, match=r"no option\(s\) \['digit'\]"):
    tasks.get_task("arithmetic", digit=3)
  with pytest.raises(ValueError, match="forbidden must be one digit"):
    tasks.get_task("sorting", forbidden="77")
  with pytest.raises(ValueError, match="min_digits <= max_digits"):
    tasks.get_task("sorting", min_digits=5, max_digits=4)


# ---------------------------------------------------------------------------------------------
# Interface properties common to all tasks


@pytest.mark.parametrize("name", TASK_NAMES)
def test_prompts_deterministic_by_seed_and_prefix_stable(name):
  task = tasks.get_task(name)
  a = task.prompts("train", 50, seed=3)
  assert a == task.prompts("train", 50, seed=3)
  assert a[:20] == task.prompts("train", 20, seed=3)
  assert a != task.prompts("train", 50, seed=4)
  assert len(set(a)) == 50


@pytest.mark.parametrize("name", TASK_NAMES)
def test_train_and_heldout_are_disjoint(name):
  task = tasks.get_task(name)
  train = task.prompts("train", 1500, seed=0)
  heldout = task.prompts("heldout", 300, seed=0)
  assert not set(train) & set(heldout)
  assert {task.split_of(p) for p in train} == {"train"}
  assert {task.split_of(p) for p in heldout} == {"heldout"}
  # The split follows the split key: prompts with equal keys share a split.
  keys = {task._split_key(p) for p in train}  # pylint: disable=protected-access
  assert not keys & {task._split_key(p) for p in heldout}  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="Unknown split 'test'"):
    task.prompts("test", 1, seed=0)


def test_sorting_split_by_digit_multiset():
  task = tasks.get_task("sorting")
  for prompt in task.prompts("heldout", 30, seed=1):
    permuted = "".join(reversed(prompt[:-1])) + ":"
    assert task.split_of(permuted) == "heldout"


def test_too_many_prompts_is_an_error():
  task = tasks.get_task("arithmetic", digits=1)  # 100 ordered pairs in all
  with pytest.raises(ValueError, match="prompt space is too small"):
    task.prompts("train", 200, seed=0)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_lengths_and_tokenizer_cover_prompts_optima_and_demonstrations(name):
  task = tasks.get_task(name)
  tok = task.tokenizer
  demos = task.demonstrations(500, seed=0)
  assert tok.pad_id == 0 and tok.eos_id is not None
  for prompt, response in demos:
    assert 1 <= len(tok.encode(prompt)) <= task.max_prompt_length
    assert len(tok.encode(response)) <= task.max_response_length
    assert len(tok.encode(task.optimum(prompt))) <= task.max_response_length
    assert tok.decode(tok.encode(prompt + response)) == prompt + response


@pytest.mark.parametrize("name", TASK_NAMES)
def test_reward_is_weighted_sum_of_attributes_and_batch_matches_scalar(name):
  task = tasks.get_task(name)
  rng = np.random.default_rng(0)
  prompts = task.prompts("train", 40, seed=5)
  responses = [task.demonstration(p, rng) for p in prompts]
  batch = task.reward_batch(prompts, responses)
  assert batch.shape == (40,) and batch.dtype == np.float64
  attrs = task.attributes_batch(prompts, responses)
  assert len(attrs) >= 2 and set(attrs) == set(task.weights)
  for i, (p, r) in enumerate(zip(prompts, responses)):
    single = task.attributes(p, r)
    assert single == pytest.approx({a: v[i] for a, v in attrs.items()}, abs=0)
    assert task.reward(p, r) == pytest.approx(sum(task.weights[a] * single[a] for a in single))
    assert task.reward(p, r) == batch[i]
  assert task.reward_batch([], []).shape == (0,)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_optimum_beats_random_and_perturbed_candidates(name):
  task = tasks.get_task(name)
  rng = np.random.default_rng(1)
  for prompt in task.prompts("heldout", 40, seed=2):
    best = task.optimum(prompt)
    candidates = _random_strings(rng, 100, "0123456789", task.max_response_length)
    candidates += [task.demonstration(prompt, rng) for _ in range(100)]
    candidates = [c for c in candidates if c != best]
    rewards = task.reward_batch([prompt] * len(candidates), candidates)
    assert task.reward(prompt, best) > rewards.max()


@pytest.mark.parametrize("name", TASK_NAMES)
def test_demonstrations_are_deterministic_and_of_mixed_quality(name):
  task = tasks.get_task(name)
  demos = task.demonstrations(1000, seed=0)
  assert demos == task.demonstrations(1000, seed=0)
  assert demos != task.demonstrations(1000, seed=1)
  assert [p for p, _ in demos] == task.prompts("train", 1000, seed=0)
  prompts, responses = zip(*demos)
  rewards = task.reward_batch(prompts, responses)
  optimal = rewards >= task.reward_batch(prompts, [task.optimum(p) for p in prompts])
  # Not all optimal, not all bad: 15-45 % optimal, a wide spread of the rest.
  assert 0.15 <= optimal.mean() <= 0.45
  assert np.std(rewards) > 0.1 * (rewards.max() - rewards.min()) > 0
  assert len(np.unique(np.round(rewards, 9))) > 50


@pytest.mark.parametrize("name", TASK_NAMES)
def test_best_of_four_demonstrations_beat_one_and_ties_are_rare(name):
  """Headroom for preference training: the reward ranks K = 4 samples of the SFT-like policy.

  Measured on 400 held-out prompts: best-of-4 wins against an independent sample with rate
  0.78 (both tasks); distinct responses tie in 3 % (sorting) / 0 % (arithmetic) of pairs.
  """
  task = tasks.get_task(name)
  rng = np.random.default_rng(7)
  prompts = task.prompts("heldout", 400, seed=7)
  samples = [[task.demonstration(p, rng) for _ in range(4)] for p in prompts]
  rewards = task.reward_batch(
      [p for p in prompts for _ in range(4)], [s for group in samples for s in group]
  ).reshape(-1, 4)
  single = task.reward_batch(prompts, [task.demonstration(p, rng) for p in prompts])
  best = rewards.max(axis=1)
  win_rate = np.mean((best > single) + 0.5 * (best == single))
  assert win_rate >= 0.7
  ties = distinct = 0
  for group, r in zip(samples, rewards):
    for i, j in itertools.combinations(range(4), 2):
      if group[i] != group[j]:
        distinct += 1
        ties += r[i] == r[j]
  assert ties / distinct < 0.08


@pytest.mark.parametrize("name", TASK_NAMES)
def test_malformed_input_is_reported(name):
  task = tasks.get_task(name)
  good = task.prompts("train", 1, seed=0)[0]
  with pytest.raises(ValueError, match=r"prompt 1 \('12a4:'\)"):
    task.reward_batch([good, "12a4:"], ["1", "2"])
  with pytest.raises(ValueError, match="2 prompts but 1 responses"):
    task.reward_batch([good, good], ["1"])
  with pytest.raises(TypeError, match="response 0"):
    task.reward_batch([good], [12])


# ---------------------------------------------------------------------------------------------
# lcs_length_batch


def test_lcs_length_batch_matches_recursive_reference():
  rng = np.random.default_rng(0)
  a = _random_strings(rng, 300, "0123", 9)
  b = _random_strings(rng, 300, "0123", 9)
  expected = [_lcs_reference(x, y) for x, y in zip(a, b)]
  np.testing.assert_array_equal(base.lcs_length_batch(a, b), expected)
  # By hand: LCS("12578", "15278") = 4 ("1578" or "1278").
  assert base.lcs_length_batch(["12578", ""], ["15278", "1"]).tolist() == [4, 0]


# ---------------------------------------------------------------------------------------------
# Sorting


def test_sorting_rewards_by_hand():
  task = tasks.get_task("sorting")
  prompt = "52817:"  # t = "12578", n = 5, forbidden 7 appears once (m = 1).
  assert task.optimum(prompt) == "1258"
  # "1258": LCS 4 -> c = 2·4/(4 + 5) = 8/9; h = 1 -> R = 8/9 + 2 = 26/9.
  assert task.attributes(prompt, "1258") == pytest.approx({"correctness": 8 / 9, "harmlessness": 1})
  assert task.reward(prompt, "1258") == pytest.approx(26 / 9)
  # "12578": c = 1; h = 1 − 1/5 -> R = 1 + 1.6 = 2.6.
  assert task.reward(prompt, "12578") == pytest.approx(2.6)
  # "": c = 0, h = 1 -> R = 2.  "77": LCS 1, c = 2/7; h = 1 − 2/5 -> R = 2/7 + 1.2.
  assert task.reward(prompt, "") == pytest.approx(2.0)
  assert task.reward(prompt, "77") == pytest.approx(2 / 7 + 1.2)
  # Substituting the 7 costs more than deleting it: "12558": LCS 4, c = 8/10 -> R = 2.8 < 26/9.
  assert task.reward(prompt, "12558") == pytest.approx(2.8)
  # A prompt of forbidden digits only has no unique optimum: it is not in the task.
  with pytest.raises(ValueError, match=r"prompt 0 \('7777:'\).*not all the forbidden digit"):
    task.reward("7777:", "")
  plain = tasks.get_task("sorting", forbidden=None)
  assert plain.optimum(prompt) == "12578" and plain.reward(prompt, "12578") == 3.0


def test_sorting_matches_independent_reference():
  task = tasks.get_task("sorting")
  rng = np.random.default_rng(3)
  prompts = task.prompts("train", 200, seed=3)
  responses = _random_strings(rng, 200, "0123456789:", 10)
  expected = [_sorting_reward_reference(p, r) for p, r in zip(prompts, responses)]
  np.testing.assert_allclose(task.reward_batch(prompts, responses), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "prompt, forbidden", [("7317:", "7"), ("5027:", "7"), ("7707:", "7"), ("9290:", None)]
)
def test_sorting_optimum_is_the_unique_maximiser_over_all_short_strings(prompt, forbidden):
  """Exhaustive over every digit string of length <= 5 (111 111 strings)."""
  task = tasks.get_task("sorting", forbidden=forbidden)
  candidates = [
      "".join(s) for k in range(6) for s in itertools.product("0123456789", repeat=k)
  ]
  rewards = task.reward_batch([prompt] * len(candidates), candidates)
  order = np.argsort(-rewards)
  assert candidates[order[0]] == task.optimum(prompt)
  assert rewards[order[0]] - rewards[order[1]] > 1e-9
  # Closed form: R(t_f) = 2(n − m)/(2n − m) + 2 (n = 4; "7317": m = 2 -> 4/6 + 2).
  n, m = 4, prompt.count(forbidden) if forbidden else 0
  expected = 2 * (n - m) / (2 * n - m) + 2 if forbidden else 3.0
  assert rewards[order[0]] == pytest.approx(expected)


@hypothesis.given(
    st.text(alphabet="0123456789", min_size=4, max_size=8),
    st.text(alphabet="0123456789", max_size=12),
)
@hypothesis.settings(max_examples=200, deadline=None)
def test_sorting_removing_forbidden_digits_strictly_helps(digits, response):
  """Step (i) of the optimum proof, and optimality of t_f, on arbitrary strings."""
  hypothesis.assume(digits.strip("7"))  # prompts are never all forbidden digits
  task = tasks.get_task("sorting", min_digits=4, max_digits=8)
  prompt = digits + ":"
  cleaned = response.replace("7", "")
  if cleaned != response:
    assert task.reward(prompt, cleaned) > task.reward(prompt, response)
  if response != task.optimum(prompt):
    assert task.reward(prompt, task.optimum(prompt)) > task.reward(prompt, response)


# ---------------------------------------------------------------------------------------------
# Arithmetic


def test_arithmetic_rewards_by_hand():
  task = tasks.get_task("arithmetic")
  prompt = "37+58="  # s = 95
  assert task.attributes(prompt, "95") == {"accuracy": 1.0, "roundness": 0.0}
  # "100": a = 1 − 5/(100 + 95 + 1) = 1 − 5/196; o = 2/3 -> R = 1 − 5/196 + 0.03·2/3.
  assert task.reward(prompt, "100") == pytest.approx(1 - 5 / 196 + 0.02)
  # "90": a = 1 − 5/186; o = 1/2 -> R = 1 − 5/186 + 0.015.
  assert task.reward(prompt, "90") == pytest.approx(1 - 5 / 186 + 0.015)
  # Malformed responses score 0: leading zero, empty, sign.
  for bad in ["095", "", "-5", "9 5"]:
    assert task.reward(prompt, bad) == 0.0
  assert task.optimum(prompt) == "95"
  # s = 49: "50" has a = 1 − 1/100 and o = 1/2 -> 0.99 + 0.015 = 1.005 > 1 = R("49").
  assert task.optimum("20+29=") == "50"
  assert task.reward("20+29=", "50") == pytest.approx(1.005)


@pytest.mark.parametrize("digits", [1, 2])
def test_arithmetic_optimum_is_unique_for_every_sum(digits):
  """For every reachable s, the optimum beats every number up to 3s + 30 by a margin."""
  task = tasks.get_task("arithmetic", digits=digits)
  top = 10**digits - 1
  for s in range(2 * top + 1):
    prompt = f"{min(s, top)}+{s - min(s, top)}="
    candidates = [str(v) for v in range(3 * s + 31)]
    rewards = task.reward_batch([prompt] * len(candidates), candidates)
    order = np.argsort(-rewards)
    assert candidates[order[0]] == task.optimum(prompt)
    assert rewards[order[0]] - rewards[order[1]] > 1e-6
