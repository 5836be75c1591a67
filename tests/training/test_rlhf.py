"""The RLHF loop: on-policy batches, rewards, advantages, the clipped loss, and a resumed run.

Hand examples give exact tensors and values (arithmetic in the comments); the loss is checked
against `alignment.losses.group.grpo_loss` and a float64 numpy reference on seeded inputs; the
end-to-end test runs 2 rounds, then resumes from the round-1 checkpoint and requires bitwise
identical parameters.
"""

import json
import math
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.losses import group
from alignment.models import sampler
from alignment.training import generation, logs, rlhf, runs, setup
from experiments import rlhf as rlhf_binary
from experiments.configs import demo as demo_config
from experiments.configs import rlhf as rlhf_config


# ------------------------------------------------------------------------------------------------
# The on-policy batch.


def test_on_policy_batch_exact_tensors():
  # Prompt 0 = [1, 2, 3] (P = 3), prompt 1 = [7] (length 1); G = 2 samples of N = 2 tokens.
  # Prompt 0: samples [4, 5] (2 tokens) and [6] (1 token); prompt 1: [8, 9] and [] (0 tokens).
  batch = rlhf.on_policy_batch(
      np.array([[1, 2, 3], [7, 0, 0]]), np.array([3, 1]),
      np.array([[[4, 5], [6, 0]], [[8, 9], [0, 0]]]), np.array([[2, 1], [2, 0]]),
      sample_logps=np.array([[[-0.5, -0.25], [-1.0, 0.0]], [[-2.0, -3.0], [0.0, 0.0]]]))
  # T = P + N = 5. The first prompt reproduces the example of docs/interfaces.md §2.
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
  """The tiny decoder (random init) and an on-policy batch of 2 prompts x 4 of its samples
  (8 rows: the sampler's shape in the end-to-end test, compiled once)."""
  task, model_config = runs.task_and_model(_tiny_config(""))
  params = runs.init_model(model_config, 0)
  prompts = task.prompts("train", 2, seed=1)
  prompt_tokens, prompt_lengths = generation.encode_prompts(
      task.tokenizer, prompts, task.max_prompt_length + 1)
  tokens, logps, lengths = sampler.sample(
      model_config, params, np.repeat(prompt_tokens, 4, 0), np.repeat(prompt_lengths, 4, 0),
      jax.random.key(3), max_new_tokens=task.max_response_length + 1,
      eos_id=task.tokenizer.eos_id)
  batch = rlhf.on_policy_batch(
      prompt_tokens, prompt_lengths, np.asarray(tokens).reshape(2, 4, -1),
      np.asarray(lengths).reshape(2, 4), sample_logps=np.asarray(logps).reshape(2, 4, -1))
  token_fn = rlhf.token_logp_fn(model_config, chunk_size=64)
  return model_config, params, batch, token_fn


def test_sampler_logps_equal_a_forward_on_the_batch(sampled):
  # The old log-probs from the sampler and those of a chunked forward over the on-policy batch
  # agree: the batch puts every sampled token where the sampler generated it.
  _, params, batch, token_fn = sampled
  forward = np.asarray(jax.jit(token_fn)(params, batch))
  np.testing.assert_allclose(forward, batch["old_token_logps"], atol=2e-5)
  assert np.all(forward[~batch["completion_mask"]] == 0.0)
  assert batch["completion_mask"].sum() > 8  # responses of more than one token


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
  # One minibatch, one epoch: advantages computed once + clipped surrogate == group.grpo_loss.
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
  expected = lambda p: group.grpo_loss(p, ref, rewards, mask=mask, old_logps=old, beta_kl=0.1,
                                       loss_type=loss_type)
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
  _, params, batch, token_fn = sampled
  adv = rlhf.group_advantages(np.full((2, 4), 2.5))
  np.testing.assert_array_equal(adv, np.zeros((2, 4)))
  assert float(group.zero_std_fraction(jnp.full((2, 4), 2.5))) == 1.0
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
# End to end: 2 rounds, checkpoint and resume.


def _tiny_config(sft_dir):
  c = rlhf_config.get_config()
  c.model.depth = 1  # compilation time dominates this module
  c.rlhf.init = sft_dir
  c.rlhf.num_prompts = 16
  c.rlhf.num_rounds = 2
  c.rlhf.prompts_per_round = 4
  c.rlhf.group_size = 4
  c.rlhf.minibatch_prompts = 2
  c.rlhf.optimizer = demo_config.optimizer(1e-3, 8)
  c.rlhf.sample_batch_size = 8  # = evaluate.batch_size: one sampler compilation for all
  c.preferences.k = 2  # held-out ranking lists of evaluate.run
  c.evaluate.num_prompts = 8
  c.evaluate.heldout_preferences = 4
  c.evaluate.batch_size = 8
  return c


def _params_bytes(workdir):
  with open(os.path.join(workdir, "params.msgpack"), "rb") as f:
    return f.read()


def test_two_rounds_checkpoint_and_resume_exactly(tmp_path):
  config = _tiny_config(str(tmp_path / "sft"))
  _, model_config = runs.task_and_model(config)  # a random policy stands in for the SFT one
  setup.save_params(runs.init_model(model_config, 1), str(tmp_path / "sft"))

  straight = str(tmp_path / "straight")
  summary = rlhf_binary.run(config, straight)
  rows = logs.read_metrics(straight)
  assert [r["step"] for r in rows] == [1, 2]
  assert all(r["finite"] == 1.0 and "reward/true" in r and "kl_k3" in r for r in rows)
  assert summary["rlhf"]["optimizer_steps"] == 2 * 2 * 2  # rounds × epochs × minibatches
  assert 0.0 <= summary["win_rate_ci95"][0] <= summary["win_rate"] <= summary["win_rate_ci95"][1]
  with open(os.path.join(straight, rlhf_binary.EVAL_FILE), encoding="utf-8") as f:
    assert json.load(f)["rlhf"]["num_rounds"] == 2
  assert os.path.getsize(os.path.join(straight, rlhf_binary.PLOT_FILE)) > 0

  # Resume: drop the round-2 checkpoint and the outputs, run again without evaluation; the run
  # restarts from the round-1 checkpoint (params, optimiser, PRNG key, round counter).
  shutil.rmtree(os.path.join(straight, "checkpoints", "2"))
  expected = _params_bytes(straight)
  for name in ("params.msgpack", "metrics.jsonl"):
    os.remove(os.path.join(straight, name))
  config.rlhf.evaluate = False
  rlhf_binary.run(config, straight)
  assert _params_bytes(straight) == expected
  resumed_rows = logs.read_metrics(straight)
  assert [r["step"] for r in resumed_rows] == [2]  # only round 2 ran again
  assert resumed_rows[0]["loss"] == rows[1]["loss"]
  with open(os.path.join(straight, rlhf_binary.SUMMARY_FILE), encoding="utf-8") as f:
    assert json.load(f)["rlhf"]["optimizer_steps"] == 8


def test_bad_config_is_reported(tmp_path):
  config = _tiny_config("")
  config.rlhf.advantage = "ppo"
  with pytest.raises(ValueError, match="rlhf.advantage must be one of"):
    rlhf_binary.run(config, str(tmp_path))
  config = _tiny_config("")
  config.rlhf.rewards = ("task", str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="neither 'task' nor a reward-model workdir"):
    rlhf_binary.reward_sources(config, None, None)
