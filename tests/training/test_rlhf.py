"""The RLHF pieces: on-policy batches, rewards, advantages, the clipped loss, and the rounds.

Hand examples give exact tensors and values (arithmetic in the comments); the loss is checked
against `grpo_loss` and a float64 numpy reference on seeded inputs; a round is prepared from fake
samples and rewards, and the round iterator is checked with a fake round (the recipe end to end,
killed and resumed: tests/recipes/test_rlhf.py).
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.losses import advantages, policy_gradient
from alignment.models import reward_model
from alignment.recipes import config as config_lib
from alignment.recipes import rlhf as rlhf_recipe
from alignment.training import reward_training, rlhf, runs, setup


# ------------------------------------------------------------------------------------------------
# The on-policy batch.


def test_on_policy_batch_exact_tensors():
  # Prompt 0 = [1, 2, 3] (P = 3), prompt 1 = [7] (length 1); G = 2 samples of N = 2 tokens.
  # Prompt 0: samples [4, 5] (2 tokens) and [6] (1 token); prompt 1: [8, 9] and [] (0 tokens).
  batch = rlhf.on_policy_batch(
      np.array([[1, 2, 3], [7, 0, 0]]), np.array([3, 1]),
      np.array([[[4, 5], [6, 0]], [[8, 9], [0, 0]]]), np.array([[2, 1], [2, 0]]),
      sample_logps=np.array([[[-0.5, -0.25], [-1.0, 0.0]], [[-2.0, -3.0], [0.0, 0.0]]]))
  # T = P + N = 5. The first prompt reproduces the example of docs/interfaces.md (Batches).
  np.testing.assert_array_equal(batch["tokens"], [
      [[1, 2, 3, 4, 5], [1, 2, 3, 6, 0]],
      [[7, 8, 9, 0, 0], [7, 0, 0, 0, 0]]])
  np.testing.assert_array_equal(batch["segment_ids"], [
      [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]],
      [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]])
  np.testing.assert_array_equal(batch["positions"], [
      [[0, 1, 2, 3, 4], [0, 1, 2, 3, 0]],
      [[0, 1, 2, 0, 0], [0, 0, 0, 0, 0]]])
  np.testing.assert_array_equal(batch["completion_mask"], [
      [[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]],
      [[0, 1, 1, 0, 0], [0, 0, 0, 0, 0]]])
  # Entry t scores token t: the sampler's log-probs land on the response tokens.
  np.testing.assert_array_equal(batch["old_token_logps"], [
      [[0, 0, 0, -0.5, -0.25], [0, 0, 0, -1.0, 0]],
      [[0, -2.0, -3.0, 0, 0], [0, 0, 0, 0, 0]]])
  np.testing.assert_array_equal(batch["response_tokens"], [[[4, 5], [6, 0]], [[8, 9], [0, 0]]])
  np.testing.assert_array_equal(batch["response_lengths"], [[2, 1], [2, 0]])
  np.testing.assert_array_equal(batch["where"], np.ones((2, 2), bool))
  assert batch["tokens"].dtype == np.int32 and batch["completion_mask"].dtype == bool


def test_on_policy_batch_rejects_bad_shapes():
  with pytest.raises(ValueError, match="sample_lengths must be in"):
    rlhf.on_policy_batch(np.array([[1, 2]]), np.array([2]), np.array([[[4, 5]]]),
                         np.array([[3]]))
  with pytest.raises(ValueError, match=r"sample_tokens must be \[B=1, G, N\]"):
    rlhf.on_policy_batch(np.array([[1, 2]]), np.array([2]), np.array([[4, 5]]), np.array([2]))
  with pytest.raises(ValueError, match="prompt_lengths must be in"):
    rlhf.on_policy_batch(np.array([[1, 2]]), np.array([0]), np.array([[[4]]]), np.array([[1]]))


@pytest.fixture(scope="module")
def sampled():
  """A one-layer decoder (random init) and `sample_groups`' on-policy batch of 2 prompts x 4 of
  its samples, with their texts."""
  task, model_config = config_lib.task_and_model(config_lib.Task(), config_lib.Model(
      "tiny", 256, {"width": 64, "depth": 1, "mlp_dim": 192, "dtype": "float32"}))
  params = runs.init_model(model_config, 0)
  batch, texts = rlhf.sample_groups(
      model_config, params, task.tokenizer, task.prompts("train", 2, seed=1), jax.random.key(3),
      num_samples=4, max_prompt_length=task.max_prompt_length + 1,
      max_new_tokens=task.max_response_length + 1, batch_size=8)
  token_fn = rlhf.token_logp_fn(model_config, chunk_size=64)
  return model_config, params, batch, token_fn, texts, task


def test_sampler_logps_equal_a_forward_on_the_batch(sampled):
  # The old log-probs from the sampler and those of a chunked forward over the on-policy batch
  # agree: the batch puts every sampled token where the sampler generated it.
  _, params, batch, token_fn, texts, task = sampled
  forward = np.asarray(jax.jit(token_fn)(params, batch))
  np.testing.assert_allclose(forward, batch["old_token_logps"], atol=2e-5)
  assert np.all(forward[~batch["completion_mask"]] == 0.0)
  assert batch["completion_mask"].sum() > 8  # responses of more than one token
  # Text b·G + g is the response (b, g): its tokens, without the EOS that ended it.
  for b in range(2):
    for g in range(4):
      n = batch["response_lengths"][b, g]
      ids = [int(t) for t in batch["response_tokens"][b, g, :n]]
      if ids and ids[-1] == task.tokenizer.eos_id:
        ids = ids[:-1]
      assert texts[4 * b + g] == task.tokenizer.decode(ids)


# ------------------------------------------------------------------------------------------------
# Rewards and advantages.


def test_kl_penalised_rewards_by_hand():
  # Sequence 0: lp = [-1, -2], lr = [-1.5, -1] -> k1 sum = 0.5 + (-1) = -0.5; r̃ = 1 + 0.1·0.5.
  # Sequence 1: lp = [-1, (masked) -9], lr = [-3, 0] -> k1 = 2;               r̃ = 2 − 0.1·2.
  lp = np.array([[[-1.0, -2.0], [-1.0, -9.0]]])
  lr = np.array([[[-1.5, -1.0], [-3.0, 0.0]]])
  mask = np.array([[[True, True], [True, False]]])
  out = rlhf.kl_penalised_rewards(np.array([[1.0, 2.0]]), lp, lr, mask, beta_kl=0.1)
  np.testing.assert_allclose(out, [[1.05, 1.8]], rtol=1e-6)
  with pytest.raises(ValueError, match="beta_kl"):
    rlhf.kl_penalised_rewards(np.zeros((1, 2)), lp, lr, mask, beta_kl=-1.0)


def test_shape_rewards_and_reference_rewards_match_numpy():
  rng = np.random.default_rng(0)
  rewards = rng.normal(size=(3, 4, 2))
  samples = rng.normal(size=(3, 8, 2))
  weights = np.array([0.5, 2.0])
  ref = rlhf.reference_rewards(samples, estimator="quantile", q=0.85)
  expected_ref = np.quantile(samples, 0.85, axis=1)  # numpy's linear interpolation, [B, M]
  np.testing.assert_allclose(ref, expected_ref, rtol=1e-5, atol=1e-6)
  normal = rlhf.reference_rewards(samples, estimator="normal", q=0.85)
  z = 1.0364333894937898  # Φ⁻¹(0.85)
  np.testing.assert_allclose(
      normal, samples.mean(1) + z * (samples.std(1, ddof=1) + 1e-5), rtol=1e-5)
  lsc = rlhf.shape_rewards(rewards, transform="lsc", reference=expected_ref, weights=weights)
  log_sigmoid = lambda x: -np.log1p(np.exp(-x))
  expected = np.sum(weights * log_sigmoid(rewards - expected_ref[:, None, :]), axis=-1)
  np.testing.assert_allclose(lsc, expected, rtol=1e-5)
  raw = rlhf.shape_rewards(rewards, weights=weights)
  np.testing.assert_allclose(raw, rewards @ weights, rtol=1e-5)
  with pytest.raises(ValueError, match="needs the per-prompt reference"):
    rlhf.shape_rewards(rewards, transform="lsc")
  with pytest.raises(ValueError, match="transform must be one of"):
    rlhf.shape_rewards(rewards, transform="log")


def test_group_advantages_match_numpy():
  rewards = np.random.default_rng(1).normal(size=(5, 4))
  mean = rewards.mean(-1, keepdims=True)
  grpo = (rewards - mean) / (rewards.std(-1, ddof=1, keepdims=True) + 1e-4)
  np.testing.assert_allclose(rlhf.group_advantages(rewards), grpo, rtol=1e-5, atol=1e-6)
  rloo = rewards - (rewards.sum(-1, keepdims=True) - rewards) / 3
  np.testing.assert_allclose(rlhf.group_advantages(rewards, estimator="rloo"), rloo, rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match="estimator must be one of"):
    rlhf.group_advantages(rewards, estimator="ppo")


def test_reward_sources_score_every_sampled_response(sampled, tmp_path):
  model_config, _, batch, _, texts, task = sampled
  prompts = task.prompts("train", 2, seed=1)
  flat_prompts = [p for p in prompts for _ in range(4)]
  # A two-head reward model saved as the reward-model recipe does: its source scores row
  # (b, g) of the batch with the heads combined by the weights of its summary.
  params = reward_model.init_reward_params(model_config, jax.random.key(5), num_heads=2)
  setup.save_params(params, str(tmp_path))
  with open(tmp_path / reward_training.SUMMARY_FILE, "w", encoding="utf-8") as f:
    f.write('{"heads": ["correctness", "harmlessness"], "head_weights": [1.0, 2.0]}')
  task_source, model_source = rlhf.reward_sources(("task", str(tmp_path)), task, model_config)
  np.testing.assert_array_equal(task_source(flat_prompts, texts, batch),
                                task.reward_batch(flat_prompts, texts))
  heads = reward_model.reward_scores(model_config, params, batch["tokens"], batch["positions"],
                                     batch["segment_ids"], batch["completion_mask"])  # [2, 4, 2]
  np.testing.assert_allclose(model_source(flat_prompts, texts, batch),
                             np.asarray(heads[..., 0] + 2.0 * heads[..., 1]).reshape(-1),
                             rtol=1e-5, atol=1e-6)
  scores = rlhf.score_groups([task_source, model_source], prompts, texts, batch, 4)
  assert scores.shape == (2, 4, 2)
  with pytest.raises(ValueError, match="neither 'task' nor a reward-model workdir"):
    rlhf.reward_sources(("task", str(tmp_path / "missing")), task, model_config)


# ------------------------------------------------------------------------------------------------
# The loss.


def _as_params(lp):
  """The loss with 'parameters' = the per-token log-probs themselves (no model)."""
  return lambda params, batch: params


def _loss_batch(advantages, old, mask, ref=None):
  batch = {"advantages": jnp.asarray(advantages, jnp.float32),
           "old_token_logps": jnp.asarray(old, jnp.float32),
           "completion_mask": jnp.asarray(mask, bool),
           "where": jnp.ones(np.shape(advantages), bool)}
  if ref is not None:
    batch["ref_token_logps"] = jnp.asarray(ref, jnp.float32)
  return batch


def test_policy_gradient_loss_by_hand():
  # One prompt, G = 2, T = 2, old log-probs 0 (ratio = exp(lp)), ε = 0.2.
  # Sequence 0 (A = +1): ratios 1.5 and 1.1 -> ℓ = −min(1.5, 1.2) = −1.2 and −min(1.1, 1.1) = −1.1;
  #   token mean −1.15.
  # Sequence 1 (A = −1): one token, ratio 0.5 -> ℓ = −min(−0.5, −0.8) = 0.8.
  # "grpo" aggregation: (sum, count) = (−1.15 + 0.8, 2) = (−0.35, 2).
  lp = jnp.log(jnp.array([[[1.5, 1.1], [0.5, 1.0]]]))
  batch = _loss_batch([[1.0, -1.0]], jnp.zeros((1, 2, 2)), [[[True, True], [True, False]]])
  loss_fn = rlhf.policy_gradient_loss(_as_params(lp))
  (total, count), (_, aux) = loss_fn(lp, batch, (), None, None)
  np.testing.assert_allclose([total, count], [-0.35, 2.0], rtol=1e-6)
  # Tokens with ratio 1.5 and 0.5 left [0.8, 1.2]: 2 of 3.
  np.testing.assert_allclose(aux["clip_fraction"], (2.0, 3.0))
  # Gradient: clipped tokens give 0; token (0, 1) gives ∂(−r·A/2)/∂lp = −1.1/2; masked: 0.
  grad = jax.grad(lambda p: loss_fn(p, batch, (), None, None)[0][0])(lp)
  np.testing.assert_allclose(grad, [[[0.0, -0.55], [0.0, 0.0]]], atol=1e-6)
  # GSPO ("sequence"): seq 0's ratio is exp(mean log ratio) = √(1.5·1.1) = 1.2845 > 1.2, so
  # both its tokens give −1.2; seq 1 is unchanged (0.8): (−1.2 + 0.8, 2); all 3 tokens clipped.
  gspo = rlhf.policy_gradient_loss(_as_params(lp), importance_sampling_level="sequence")
  (total, count), (_, aux) = gspo(lp, batch, (), None, None)
  np.testing.assert_allclose([total, count], [-0.4, 2.0], rtol=1e-6)
  np.testing.assert_allclose(aux["clip_fraction"], (3.0, 3.0))


def test_policy_gradient_loss_kl_term_by_hand():
  # A = 0, so only β·k3 remains. Token: lp = 0, lr = log 0.5: Δ = lr − lp = −0.6931,
  # k3 = e^Δ − Δ − 1 = 0.5 + 0.6931 − 1 = 0.19315; β = 0.5 -> 0.096574 on one token of seq 0.
  # Seq 1 has lp = lr: k3 = 0. "grpo": (0.096574 + 0) over 2 sequences.
  lp = jnp.zeros((1, 2, 1))
  ref = jnp.array([[[math.log(0.5)], [0.0]]])
  batch = _loss_batch([[0.0, 0.0]], lp, [[[True], [True]]], ref=ref)
  loss_fn = rlhf.policy_gradient_loss(_as_params(lp), beta_kl=0.5)
  (total, count), (_, aux) = loss_fn(lp, batch, (), None, None)
  np.testing.assert_allclose([total, count], [0.5 * (0.5 + math.log(2) - 1), 2.0], rtol=1e-5)
  np.testing.assert_allclose(aux["kl_k3"], ((0.5 + math.log(2) - 1), 2.0), rtol=1e-5)
  with pytest.raises(ValueError, match="ref_token_logps"):
    loss_fn(lp, _loss_batch([[0.0, 0.0]], lp, [[[True], [True]]]), (), None, None)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_policy_gradient_loss_equals_grpo_loss(loss_type):
  # One minibatch, one epoch: advantages computed once + clipped surrogate == grpo_loss.
  rng = np.random.default_rng(2)
  b, g, t = 3, 4, 5
  lp = jnp.asarray(rng.normal(size=(b, g, t)) - 2.0, jnp.float32)
  old = lp + jnp.asarray(rng.normal(scale=0.3, size=(b, g, t)), jnp.float32)
  ref = lp + jnp.asarray(rng.normal(scale=0.3, size=(b, g, t)), jnp.float32)
  mask = rng.random((b, g, t)) < 0.7
  rewards = rng.normal(size=(b, g))
  batch = _loss_batch(rlhf.group_advantages(rewards), old, mask, ref=ref)
  loss_fn = rlhf.policy_gradient_loss(_as_params(lp), beta_kl=0.1, loss_type=loss_type)
  objective = lambda p: (lambda out: out[0] / out[1])(loss_fn(p, batch, (), None, None)[0])
  expected = lambda p: policy_gradient.grpo_loss(p, ref, rewards, mask=mask, old_logps=old,
                                                 beta_kl=0.1, loss_type=loss_type)
  np.testing.assert_allclose(objective(lp), expected(lp), rtol=1e-5)
  chex.assert_trees_all_close(jax.grad(objective)(lp), jax.grad(expected)(lp), rtol=1e-4,
                              atol=1e-7)


def test_policy_gradient_loss_matches_float64_numpy():
  rng = np.random.default_rng(3)
  b, g, t, eps = 2, 3, 4, 0.2
  lp = rng.normal(size=(b, g, t)) * 0.3 - 1.0
  old = lp + rng.normal(scale=0.3, size=(b, g, t))
  mask = rng.random((b, g, t)) < 0.8
  adv = rng.normal(size=(b, g))
  ratio = np.exp(lp - old)
  per_token = -np.minimum(ratio * adv[..., None], np.clip(ratio, 1 - eps, 1 + eps) * adv[..., None])
  per_seq = (per_token * mask).sum(-1) / np.maximum(mask.sum(-1), 1)
  loss_fn = rlhf.policy_gradient_loss(_as_params(None))
  (total, count), _ = loss_fn(jnp.asarray(lp, jnp.float32), _loss_batch(adv, old, mask), (), None,
                              None)
  np.testing.assert_allclose(total / count, per_seq.mean(), rtol=1e-5)


def test_identical_rewards_give_zero_advantage_and_finite_update(sampled):
  # A whole group with one reward: GRPO's std is 0, the advantages are exactly 0 (no 0/0), and
  # a real train step through the model (loss with a KL term, gradient, update) stays finite.
  _, params, batch, token_fn, _, _ = sampled
  adv = rlhf.group_advantages(np.full((2, 4), 2.5))
  np.testing.assert_array_equal(adv, np.zeros((2, 4)))
  assert float(advantages.zero_std_fraction(jnp.full((2, 4), 2.5))) == 1.0
  # Reference = old = the policy itself: k3 = 0 and ∂k3/∂lp = 1 − e^Δ = 0 at Δ = 0, and A = 0,
  # so the loss and the gradient are 0 (up to the float noise of sampler vs forward).
  batch = dict(batch, advantages=np.asarray(adv), ref_token_logps=batch["old_token_logps"])
  loss_fn = rlhf.policy_gradient_loss(token_fn, beta_kl=0.05)

  def objective(p):
    (total, count), (_, aux) = loss_fn(p, batch, (), None, None)
    return total / count, (count, aux["kl_k3"])

  (loss, (count, kl)), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
  assert float(count) == 8.0  # "grpo" aggregation: one term per sequence
  assert abs(float(loss)) < 1e-6 and float(kl[0]) < 1e-5
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(x)) for x in leaves)
  assert max(float(jnp.max(jnp.abs(x))) for x in leaves) < 1e-4


# ------------------------------------------------------------------------------------------------
# Scheduling.


def test_minibatches_cover_every_group_once_per_epoch():
  order = rlhf.minibatch_indices(8, 2, 3, np.random.default_rng(0))
  assert len(order) == 12 and all(len(i) == 2 for i in order)
  for epoch in range(3):
    np.testing.assert_array_equal(np.sort(np.concatenate(order[4 * epoch:4 * epoch + 4])),
                                  np.arange(8))
  with pytest.raises(ValueError, match="multiple of the minibatch size"):
    rlhf.minibatch_indices(8, 3, 1, np.random.default_rng(0))


def test_prompt_rounds_are_deterministic_and_resumable():
  pool = [f"p{i}" for i in range(10)]
  a = rlhf.PromptRounds(pool, per_round=4, seed=0)
  first, second = next(a), next(a)
  assert len(set(first)) == 4 and a.get_state() == {"round": 2}
  b = rlhf.PromptRounds(pool, per_round=4, seed=0)
  b.set_state({"round": 1})
  assert next(b) == second
  with pytest.raises(ValueError, match="prompts_per_round"):
    rlhf.PromptRounds(pool, per_round=11, seed=0)


# ------------------------------------------------------------------------------------------------
# Rounds.


def _hand_round():
  """One prompt, G = 2 samples of N = 2 tokens: `[1, 2]` (log-probs −1, −2) and `[3]` (−0.5)."""
  return rlhf.on_policy_batch(np.array([[5]]), np.array([1]), np.array([[[1, 2], [3, 0]]]),
                              np.array([[2, 1]]),
                              sample_logps=np.array([[[-1.0, -2.0], [-0.5, 0.0]]]))


def _prepare_hand_round(cfg, calls):
  sources = [lambda prompts, texts, batch: np.array([1.0, 3.0]),
             lambda prompts, texts, batch: np.array([0.0, 2.0])]

  def sample(params, prompts, key, n):
    calls.append((params, n))
    return _hand_round(), ["a", "b"]

  # token_logps(params, batch) = params: the "reference" is its per-token log-probs [1, 2, T].
  reference = np.array([[[0.0, -1.5, -1.0], [0.0, -3.0, 0.0]]])
  return rlhf.prepare_round(
      cfg, "policy", ["x"], jax.random.key(0), reference_params=reference, sample=sample,
      sources=sources, true_reward=lambda prompts, texts: np.array([2.0, 3.0]),
      token_logps=lambda params, batch: params)


def test_prepare_round_by_hand():
  # Raw rewards: 1·[1, 3] + 0.5·[0, 2] = [1, 4]. k1 per sequence against the reference:
  # seq 0: (−1 + 1.5) + (−2 + 1) = −0.5; seq 1: −0.5 + 3 = 2.5. KL in the reward, β = 0.1:
  # [1 + 0.05, 4 − 0.25] = [1.05, 3.75]; RLOO with G = 2: A = r − r_other = [−2.7, 2.7].
  cfg = rlhf_recipe.RLHF(group_size=2, reward_weights=(1.0, 0.5), beta_kl=0.1, kl_in="reward",
                         advantage="rloo")
  calls = []
  batch, host = _prepare_hand_round(cfg, calls)
  assert calls == [("policy", 2)]
  np.testing.assert_allclose(batch["advantages"], [[-2.7, 2.7]], rtol=1e-6)
  np.testing.assert_array_equal(batch["ref_token_logps"], [[[0.0, -1.5, -1.0], [0.0, -3.0, 0.0]]])
  assert host == pytest.approx({"kl_sequence": 1.0, "reward/true": 2.5, "reward/shaped": 2.4,
                                "reward/zero_std_groups": 0.0, "response_length": 1.5})
  # LSC: r_ref per source = the 0.85-quantile of the reference samples' rewards (the same fake
  # samples: [1, 3] -> 2.7, [0, 2] -> 1.7), reward = Σ_m w_m·logσ(r_m − r_ref,m); GRPO z-scores.
  cfg = rlhf_recipe.RLHF(group_size=2, reward_weights=(1.0, 0.5), beta_kl=0.0,
                         reward_transform="lsc", r_ref_samples=2)
  calls = []
  batch, host = _prepare_hand_round(cfg, calls)
  assert [n for _, n in calls] == [2, 2] and calls[1][0].shape == (1, 2, 3)  # the reference
  log_sigmoid = lambda x: -np.log1p(np.exp(-x))
  shaped = log_sigmoid(np.array([1.0, 3.0]) - 2.7) + 0.5 * log_sigmoid(np.array([0.0, 2.0]) - 1.7)
  assert host["reward/shaped"] == pytest.approx(shaped.mean(), rel=1e-5)
  np.testing.assert_allclose(batch["advantages"], rlhf.group_advantages(shaped[None]), rtol=1e-5)
  assert "kl_sequence" not in host and "ref_token_logps" not in batch


def test_round_batches_sample_with_the_current_policy_and_resume_at_round_boundaries():
  calls = []

  def prepare(params, prompts, key):
    calls.append((params, tuple(prompts), jax.random.key_data(key).tolist()))
    groups = np.arange(len(prompts))[:, None]  # group b holds b
    return ({"tokens": groups, "advantages": groups * 1.0,
             "prompt_tokens": groups},  # not a step key: not served
            {"reward/true": float(len(calls))})

  make = lambda: rlhf.RoundBatches(rlhf.PromptRounds([f"p{i}" for i in range(8)], per_round=4,
                                                     seed=0),
                                   prepare, minibatch_prompts=2, epochs=2, seed=0)
  it = make()
  assert it.steps_per_round == 4  # 2 epochs x 4 groups / 2 per minibatch
  with pytest.raises(RuntimeError, match="update_policy"):
    next(it)
  served = []
  for step in range(8):
    it.update_policy(f"policy{step}")
    batch = next(it)
    assert set(batch) == {"tokens", "advantages"} and batch["tokens"].shape == (2, 1)
    served.append(batch["tokens"][:, 0])
    if step == 1:
      with pytest.raises(ValueError, match="middle of round 1"):
        it.get_state()
  # A round starts at steps 0 and 4, sampled with the policy of that step; each epoch (two
  # minibatches) covers the round's four groups once.
  assert [c[0] for c in calls] == ["policy0", "policy4"]
  for epoch in range(4):
    np.testing.assert_array_equal(np.sort(np.concatenate(served[2 * epoch:2 * epoch + 2])),
                                  np.arange(4))
  assert it.metrics() == {"round": 2.0, "reward/true": 2.0}
  assert it.get_state() == {"round": 2}
  # Resumed after round 1: round 2 has the same prompts, key and minibatch order.
  resumed = make()
  resumed.set_state({"round": 1})
  resumed_served = []
  for _ in range(4):
    resumed.update_policy("policy4")
    resumed_served.append(next(resumed)["tokens"][:, 0])
  assert calls[2] == calls[1]
  np.testing.assert_array_equal(resumed_served, served[4:])
