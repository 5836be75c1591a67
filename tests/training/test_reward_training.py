"""Tests of alignment.training.reward_training (the recipe end to end: tests/recipes).

Losses on hand-made rewards (closed forms in comments) and against float64 numpy references;
gradients reach the scores of valid items only; the data iterator resumes exactly; heads, rated
lists and a saved reward model read back.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignment.models import reward_model
from alignment.recipes import config as config_lib
from alignment.recipes import reward_model as reward_model_recipe
from alignment.training import generation, reward_training, setup
from alignment.training.step import init_train_state, make_train_step


def _identity_score(params, batch):
  """A 'model' whose rewards [B, K, A] are its parameters: losses of hand-made rewards."""
  del batch
  return params


def _loss(loss_fn, rewards, labels, *, where=None, attribute_labels=None, rng=None):
  rewards = jnp.asarray(rewards, jnp.float32)
  batch = {"labels": jnp.asarray(labels, jnp.float32),
           "where": jnp.ones(rewards.shape[:2], bool) if where is None else jnp.asarray(where)}
  if attribute_labels is not None:
    batch["attribute_labels"] = jnp.asarray(attribute_labels, jnp.float32)
  rng = jax.random.key(0) if rng is None else rng
  (total, count), (state, aux) = jax.jit(loss_fn)(rewards, batch, (), None, rng)
  assert state == ()
  aux = {k: tuple(float(x) for x in v) for k, v in aux.items()}
  return float(total), float(count), aux


def _sp(x):
  return float(np.log1p(np.exp(x)))


# --- exact values on hand-made rewards ----------------------------------------------------------


def test_bradley_terry_pair_by_hand():
  loss_fn = reward_training.bradley_terry_loss(_identity_score)
  # r_w = 2, r_l = 0: −logσ(2) = log(1 + e^−2) = 0.126928; one pair.
  total, count, aux = _loss(loss_fn, [[[2.0], [0.0]]], [[1.0, 0.0]])
  assert count == 1.0
  assert total == pytest.approx(0.126928, abs=1e-6)
  assert aux["accuracy"] == (1.0, 1.0)
  # τ = 0.5 doubles the margin: log(1 + e^−4) = 0.018150.
  total, _, _ = _loss(reward_training.bradley_terry_loss(_identity_score, temperature=0.5),
                      [[[2.0], [0.0]]], [[1.0, 0.0]])
  assert total == pytest.approx(0.018150, abs=1e-6)


def test_bradley_terry_on_a_list_sums_its_pairs():
  loss_fn = reward_training.bradley_terry_loss(_identity_score)
  # r = [2, 0, 1], labels [2, 0, 1]: pairs (0,1) d = 2, (0,2) d = 1, (2,1) d = 1:
  # log(1 + e^−2) + 2·log(1 + e^−1) = 0.126928 + 2·0.313262 = 0.753452 over 3 pairs.
  # List 2: labels [1, 1, 0], r = [0, 3, 1]: pairs (0,2) d = −1, (1,2) d = 2 (the tie is no pair):
  # log(1 + e^1) + log(1 + e^−2) = 1.313262 + 0.126928 = 1.440190 over 2 pairs.
  total, count, aux = _loss(loss_fn, [[[2.0], [0.0], [1.0]], [[0.0], [3.0], [1.0]]],
                            [[2.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
  assert count == 5.0
  assert total == pytest.approx(0.753452 + 1.440190, abs=1e-5)
  assert aux["accuracy"] == (4.0, 5.0)  # only (0,2) of list 2 is mis-ordered


def test_plackett_luce_by_hand_and_equal_to_bradley_terry_for_pairs():
  loss_fn = reward_training.plackett_luce_loss(_identity_score, random_ties=False)
  # r = [2, 0, 1], order by labels [2, 0, 1] is (0, 2, 1):
  # −(2 − log(e² + e⁰ + e¹)) − (1 − log(e¹ + e⁰)) − 0
  # = (log 11.107338 − 2) + (log 3.718282 − 1) = 0.407606 + 0.313262 = 0.720868; one list.
  total, count, _ = _loss(loss_fn, [[[2.0], [0.0], [1.0]]], [[2.0, 0.0, 1.0]])
  assert count == 1.0
  assert total == pytest.approx(0.720868, abs=1e-5)
  # K = 2: ListMLE = −logσ(r_w − r_l) = Bradley–Terry (docs/conventions.md#reduction-to-dpo).
  rewards = np.random.default_rng(0).normal(size=(5, 2, 1))
  labels = [[1.0, 0.0]] * 5
  pl, pl_count, _ = _loss(reward_training.plackett_luce_loss(_identity_score), rewards, labels)
  bt, bt_count, _ = _loss(reward_training.bradley_terry_loss(_identity_score), rewards, labels)
  assert (pl, pl_count) == pytest.approx((bt, bt_count), rel=1e-6)


def test_per_attribute_labels_by_hand():
  # Two heads (weights w = [1, 2]), K = 2. Head 0 ranks by attribute 0 (slot 0 better):
  # r = [1, 0], d = 1: log(1 + e^−1) = 0.313262, weight 1. Head 1 ranks by attribute 1
  # (slot 1 better): r = [0.5, 2], d = 1.5: log(1 + e^−1.5) = 0.201413, weight 2.
  # Sum 0.313262 + 2·0.201413 = 0.716088 over 2 (attribute, pair) items.
  rewards = [[[1.0, 0.5], [0.0, 2.0]]]
  attribute_labels = [[[0.9, 0.1], [0.2, 0.8]]]
  loss_fn = reward_training.bradley_terry_loss(_identity_score, labels="per_attribute",
                                               head_weights=[1.0, 2.0])
  total, count, aux = _loss(loss_fn, rewards, [[1.0, 0.0]], attribute_labels=attribute_labels)
  assert count == 2.0
  assert total == pytest.approx(0.313262 + 2 * 0.201413, abs=1e-5)
  assert aux["accuracy/head_0"] == (1.0, 1.0) and aux["accuracy/head_1"] == (1.0, 1.0)
  # Combined score s = r_0 + 2·r_1 = [2, 4] on labels [1, 0] (overall accuracy 0/1).
  assert aux["accuracy"] == (0.0, 1.0)
  # A tied attribute forms no pair: only head 0 is left.
  total, count, _ = _loss(loss_fn, rewards, [[1.0, 0.0]],
                          attribute_labels=[[[0.9, 1.0], [0.2, 1.0]]])
  assert (total, count) == pytest.approx((0.313262, 1.0), abs=1e-5)


def test_combined_labels_rank_the_weighted_sum_of_heads():
  # s = [1 + 2·0.5, 0 + 2·2] = [2, 4], labels [1, 0]: log(1 + e^{2}) = 2.126928.
  loss_fn = reward_training.bradley_terry_loss(_identity_score, head_weights=[1.0, 2.0])
  total, count, _ = _loss(loss_fn, [[[1.0, 0.5], [0.0, 2.0]]], [[1.0, 0.0]])
  assert (total, count) == pytest.approx((2.126928, 1.0), abs=1e-5)


# --- float64 references on random inputs -------------------------------------------------------


def _np_bradley_terry(s, y, valid, w):
  total, count = 0.0, 0
  for b in range(s.shape[0]):
    for i in range(s.shape[1]):
      for j in range(s.shape[1]):
        if valid[b, i] and valid[b, j] and y[b, i] > y[b, j]:
          total += w * np.logaddexp(0.0, -(s[b, i] - s[b, j]))
          count += 1
  return total, count


def _np_listmle(s, y, valid, w):
  total, count = 0.0, 0
  for b in range(s.shape[0]):
    idx = [i for i in np.argsort(-y[b], kind="stable") if valid[b, i]]
    if not idx:
      continue
    count += 1
    for r, i in enumerate(idx):
      total += w * (np.logaddexp.reduce(s[b, idx[r:]]) - s[b, i])
  return total, count


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["bradley_terry", "plackett_luce"])
def test_losses_match_float64_references(name, seed):
  rng = np.random.default_rng(seed)
  b, k, a = 4, 5, 3
  rewards = rng.normal(size=(b, k, a)) * 2
  where = rng.random((b, k)) < 0.8
  where[0] = False  # an empty list
  attribute_labels = np.stack([[rng.permutation(k) for _ in range(b)] for _ in range(a)], -1)
  labels = rng.integers(0, 3, size=(b, k)).astype(np.float64)  # ties
  w = np.array([0.5, 1.0, 2.0])
  kwargs = {} if name == "bradley_terry" else {"random_ties": False}
  reference = _np_bradley_terry if name == "bradley_terry" else _np_listmle
  make = reward_training.get_loss(name)

  combined = _loss(make(_identity_score, head_weights=w, temperature=0.7, **kwargs),
                   rewards, labels, where=where)
  expected = reference(rewards @ w / 0.7, labels, where, 1.0)
  assert combined[:2] == pytest.approx(expected, rel=1e-5)

  per_attribute = _loss(make(_identity_score, labels="per_attribute", head_weights=w, **kwargs),
                        rewards, labels, where=where, attribute_labels=attribute_labels)
  parts = [reference(rewards[..., h], attribute_labels[..., h], where, w[h]) for h in range(a)]
  assert per_attribute[:2] == pytest.approx(
      (sum(p[0] for p in parts), sum(p[1] for p in parts)), rel=1e-5)


def test_random_tie_breaking_changes_only_tied_orders():
  rewards = jnp.array([[[0.3], [-1.0], [2.0]]])
  loss_fn = reward_training.plackett_luce_loss(_identity_score)
  distinct = {_loss(loss_fn, rewards, [[2.0, 1.0, 0.0]], rng=jax.random.key(s))[0]
              for s in range(6)}
  assert len(distinct) == 1
  tied = {round(_loss(loss_fn, rewards, [[1.0, 1.0, 0.0]], rng=jax.random.key(s))[0], 5)
          for s in range(12)}
  # Orders (0, 1, 2) and (1, 0, 2) of the tied pair: two different likelihoods.
  assert len(tied) == 2


# --- gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bradley_terry", "plackett_luce"])
def test_gradients_reach_valid_items_only(name):
  rewards = jnp.asarray(np.random.default_rng(3).normal(size=(2, 3, 1)), jnp.float32)
  labels = jnp.array([[2.0, 0.0, 1.0], [1.0, 0.0, 5.0]])
  where = jnp.array([[True, True, True], [True, True, False]])
  loss_fn = reward_training.get_loss(name)(_identity_score)
  batch = {"labels": labels, "where": where}
  grad = jax.jit(jax.grad(lambda r: loss_fn(r, batch, (), None, jax.random.key(0))[0][0]))(
      rewards)
  assert float(grad[1, 2, 0]) == 0.0  # padded slot
  assert float(grad[0, 0, 0]) < 0 and float(grad[0, 1, 0]) > 0  # best up, worst down
  np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-6)  # shift invariance per list
  if name == "bradley_terry":
    # List 1 has one pair (0 ≻ 1): ∂/∂r_0 = −σ(−(r_0 − r_1)).
    d = float(rewards[1, 0, 0] - rewards[1, 1, 0])
    assert float(grad[1, 0, 0]) == pytest.approx(-1 / (1 + np.exp(d)), rel=1e-5)


# --- errors -------------------------------------------------------------------------------------


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="labels must be one of"):
    reward_training.bradley_terry_loss(_identity_score, labels="mean")
  with pytest.raises(ValueError, match="temperature"):
    reward_training.plackett_luce_loss(_identity_score, temperature=0.0)
  with pytest.raises(KeyError, match="bradley_terry"):
    reward_training.get_loss("hinge")
  per_attribute = reward_training.bradley_terry_loss(_identity_score, labels="per_attribute")
  with pytest.raises(ValueError, match="attribute_labels"):
    _loss(per_attribute, [[[1.0], [0.0]]], [[1.0, 0.0]])
  with pytest.raises(ValueError, match="one label per head"):
    _loss(per_attribute, [[[1.0, 2.0], [0.0, 1.0]]], [[1.0, 0.0]],
          attribute_labels=[[[1.0], [0.0]]])
  with pytest.raises(ValueError, match="head_weights"):
    reward_training.combine_heads(jnp.ones((2, 3)), [1.0, 2.0])


# --- data iteration and evaluation -------------------------------------------------------------


def test_array_batches_cover_every_row_and_resume_exactly():
  arrays = {"x": np.arange(10), "y": np.arange(10) * 2}
  it = reward_training.array_batches(arrays, batch_size=5, seed=1)
  first_epoch = np.concatenate([next(it)["x"] for _ in range(2)])
  assert sorted(first_epoch) == list(range(10))
  state = it.get_state()
  ahead = [next(it) for _ in range(3)]
  it.set_state(state)
  again = [next(it) for _ in range(3)]
  for a, b in zip(ahead, again):
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["y"], 2 * a["x"])
  with pytest.raises(ValueError, match="leading sizes"):
    reward_training.array_batches({"x": np.arange(3), "y": np.arange(4)}, batch_size=2, seed=0)


def test_ranking_evaluation_by_hand():
  # List 0: rewards [3, 1, 2], true [3, 1, 2]: 3/3 pairs, exact. List 1: rewards [1, 2, 3],
  # true [3, 2, 1]: 0/3 pairs. List 2: slot 2 padded, rewards [0, 5], true [1, 0]: 0/1 pair.
  rewards = np.array([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0], [0.0, 5.0, 9.0]])[..., None]
  arrays = {"labels": np.array([[3.0, 1.0, 2.0], [3.0, 2.0, 1.0], [1.0, 0.0, 0.0]]),
            "where": np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0]], bool)}
  out = reward_training.ranking_evaluation(rewards, arrays)
  assert out == pytest.approx({"pairwise_accuracy": 3 / 7, "list_accuracy": 1 / 3})


def _task_and_model():
  """The sorting task and the demo's decoder (the reward-model recipe's defaults)."""
  config = reward_model_recipe.Config()
  return config_lib.task_and_model(config.task, config.model)


def test_train_step_updates_only_through_valid_slots():
  """One real step: a padded slot's content does not change the update."""
  task, model_config = _task_and_model()
  prompts = task.prompts("train", 4, seed=0)
  responses = [["0123", "3210", "99"]] * 4
  with_pad = reward_training.preference_arrays(
      task, prompts, responses, np.array([[1.0, 0.0, 7.0]] * 4), ["reward"])
  with_pad["where"][:, 2] = False  # slot 2 is padding: its label 7 must form no pair
  params = reward_model.init_reward_params(model_config, jax.random.key(0))
  loss_fn = reward_training.bradley_terry_loss(reward_training.score_fn(model_config))
  step = make_train_step(loss_fn, optax.sgd(0.1), donate=False)
  state = init_train_state(params, optax.sgd(0.1), jax.random.key(1))
  other = {k: v.copy() for k, v in with_pad.items()}
  other["tokens"][:, 2] = np.where(other["segment_ids"][:, 2] != 0, 5, 0)
  new_a, metrics_a = step(state, with_pad, None)
  new_b, metrics_b = step(state, other, None)
  assert float(metrics_a["count"]) == 4.0  # one pair per list; the padded slot forms none
  for a, b in zip(jax.tree.leaves(new_a.params), jax.tree.leaves(new_b.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert any(not np.allclose(a, b) for a, b in
             zip(jax.tree.leaves(new_a.params), jax.tree.leaves(params)))


# --- per-attribute raters and reward models ----------------------------------------------------


def test_rate_lists_rates_the_chosen_attribute_by_hand():
  task, _ = _task_and_model()
  # Prompt "1727:" (n = 4, forbidden 7 twice; t = "1277", optimum "12"):
  # "12":   LCS 2, c = 2·2/(2 + 4) = 0.6667, h = 1           -> R = c + 2h = 2.6667
  # "1277": LCS 4, c = 1,                    h = 1 − 2/4 = 0.5 -> R = 2
  # "127":  LCS 3, c = 2·3/(3 + 4) = 0.8571, h = 1 − 1/4 = 0.75 -> R = 2.3571
  # "1":    LCS 1, c = 2·1/(1 + 4) = 0.4,    h = 1           -> R = 2.4
  prompts, responses = ["1727:"], [["12", "1277", "127", "1"]]
  expected = {"correctness": [2 / 3, 1.0, 6 / 7, 0.4], "harmlessness": [1.0, 0.5, 0.75, 1.0],
              "": [8 / 3, 2.0, 2 + 5 / 14, 2.4]}
  for attribute, values in expected.items():
    rewards, labels = generation.rate_lists(
        task, prompts, responses, np.random.default_rng(0), rater="true_reward",
        temperature=0.0, flip_rate=0.0, attribute=attribute)
    np.testing.assert_allclose(rewards, [values], rtol=1e-12)
    np.testing.assert_allclose(labels, [values], rtol=1e-6)
  # A noiseless Plackett–Luce rater over correctness ranks 1277 > 127 > 12 > 1: labels 3, 2, 1, 0.
  _, labels = generation.rate_lists(task, prompts, responses, np.random.default_rng(0),
                                    rater="plackett_luce", temperature=0.0, flip_rate=0.0,
                                    attribute="correctness")
  np.testing.assert_array_equal(labels, [[1.0, 3.0, 2.0, 0.0]])
  with pytest.raises(ValueError, match=r"unknown attribute 'length'.*'correctness'"):
    generation.rate_lists(task, prompts, responses, np.random.default_rng(0), rater="true_reward",
                          temperature=0.0, flip_rate=0.0, attribute="length")


def test_heads_and_weights_name_each_head_and_check_the_options():
  task, _ = _task_and_model()
  assert reward_training.heads_and_weights(task) == (["reward"], None)
  assert reward_training.heads_and_weights(task, heads="attributes") == (
      ["correctness", "harmlessness"], [1.0, 2.0])  # the true reward c + 2h
  assert reward_training.heads_and_weights(task, attribute="harmlessness") == (
      ["harmlessness"], None)
  with pytest.raises(ValueError, match=r"data.attribute must be '' or one of \['correctness'"):
    reward_training.heads_and_weights(task, attribute="length")
  with pytest.raises(ValueError, match="heads='scalar'"):
    reward_training.heads_and_weights(task, heads="attributes", attribute="correctness")
  with pytest.raises(ValueError, match="heads='attributes'"):
    reward_training.heads_and_weights(task, labels="per_attribute")
  with pytest.raises(ValueError, match="heads must be one of"):
    reward_training.heads_and_weights(task, heads="linear")


def test_rated_lists_arrays_and_stats_by_hand():
  task, _ = _task_and_model()
  # The prompt of the hand example above: true rewards [8/3, 2, 2 + 5/14, 2.4] and, per head,
  # harmlessness [1, 0.5, 0.75, 1]; the true-reward rater's labels are the rewards themselves.
  arrays, stats = reward_training.rated_lists(
      task, ["1727:", "1727:"], [["12", "1277", "127", "1"], ["1", "1", "1", "1"]],
      np.random.default_rng(0), heads=["reward", "harmlessness"], rater="true_reward",
      rater_temperature=0.0)
  np.testing.assert_allclose(arrays["labels"][0], [8 / 3, 2.0, 2 + 5 / 14, 2.4], rtol=1e-6)
  np.testing.assert_allclose(arrays["attribute_labels"][0],
                             [[8 / 3, 1.0], [2.0, 0.5], [2 + 5 / 14, 0.75], [2.4, 1.0]],
                             rtol=1e-6)
  assert arrays["tokens"].shape[:2] == (2, 4) and arrays["where"].all()
  # List 1 is four copies of "1" (R = 2.4): all tied. Spread of list 0: 8/3 − 2 = 2/3.
  assert stats["lists_all_tied"] == 1 and stats["k"] == 4 and stats["rated"] == "reward"
  assert stats["mean_reward_spread"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_load_reward_model_reads_the_heads_of_its_summary(tmp_path):
  _, model_config = _task_and_model()
  params = reward_model.init_reward_params(model_config, jax.random.key(3), num_heads=2)
  setup.save_params(params, str(tmp_path))
  with open(tmp_path / reward_training.SUMMARY_FILE, "w", encoding="utf-8") as f:
    json.dump({"heads": ["correctness", "harmlessness"], "head_weights": [1.0, 2.0]}, f)
  loaded, weights = reward_training.load_reward_model(model_config, str(tmp_path))
  assert weights == [1.0, 2.0]
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
