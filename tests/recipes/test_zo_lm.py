"""ZO-RankSGD on the tiny language model (`alignment/recipes/zo_lm.py`): biased sampling through
the sampler's logit-bias hook, oracles, the run and its binary.

Small shapes: an untrained tiny decoder for the sampling checks, a short in-process SFT for the
end-to-end rise (slow).
"""

import dataclasses
import io
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.data import tasks
from alignment.models import sampler, transformer
from alignment.recipes import zo_lm
from alignment.recipes.config import Model, Task, from_dict, replace_in, task_and_model
from alignment.training import generation, runs, setup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TASK = tasks.get_task("sorting")
V = TASK.tokenizer.vocab_size  # 14: pad, BOS, EOS, ten digits, ":"
EOS = TASK.tokenizer.eos_id


@pytest.fixture(scope="module")
def model():
  _, model_config = task_and_model(Task(), Model())
  return model_config, runs.init_model(model_config, 0)


def _prompts(n=6):
  prompts = TASK.prompts("train", n, seed=5)
  tokens, lengths = generation.encode_prompts(TASK.tokenizer, prompts,
                                              TASK.max_prompt_length + 1)
  return prompts, tokens, lengths


def _sample(model, biases, key, n_new=7, temperature=1.0):
  model_config, params = model
  _, tokens, lengths = _prompts()
  return zo_lm.sample_with_biases(model_config, params, jnp.asarray(biases, jnp.float32),
                                  tokens, lengths, key, max_new_tokens=n_new,
                                  temperature=temperature, eos_id=EOS)


def test_zero_bias_reproduces_the_library_sampler(model):
  model_config, params = model
  _, tokens, lengths = _prompts()  # prompts of different lengths: right padding exercised
  assert len(set(lengths.tolist())) > 1
  key = jax.random.key(11)
  got, got_lengths = _sample(model, np.zeros((2, V)), key)
  want, _, want_lengths = sampler.sample(model_config, params, tokens, lengths, key,
                                         max_new_tokens=7, eos_id=EOS)
  for c in range(2):  # both candidates: the same noise, the same bias -> the same samples
    np.testing.assert_array_equal(got[c], want)
    np.testing.assert_array_equal(got_lengths[c], want_lengths)


def test_biased_steps_match_an_independent_per_row_forward(model):
  """Tokens 0 and 1 equal categorical((z + b)/T), z from a segment-masked forward (no cache)."""
  model_config, params = model
  _, tokens, lengths = _prompts()
  biases = np.zeros((2, V))
  biases[0, [3, 4, 5]] = [2.0, 1.0, -3.0]
  biases[1] = np.linspace(-2.0, 2.0, V)
  key, temperature = jax.random.key(2), 0.7
  got, _ = _sample(model, biases, key, temperature=temperature)

  width = tokens.shape[1] + 2

  @jax.jit
  def next_logits(rows, row_lengths):  # [R, width] right-padded -> next-token logits [R, V]
    segments = (jnp.arange(width)[None] < row_lengths[:, None]).astype(jnp.int32)
    hidden = transformer.apply(model_config, params, rows,
                               jnp.broadcast_to(jnp.arange(width), rows.shape), segments)
    last = jnp.take_along_axis(hidden, (row_lengths - 1)[:, None, None], axis=1)[:, 0]
    return transformer.logits(model_config, params, last)

  for c in range(2):
    rows = np.zeros((len(lengths), width), np.int32)
    rows[:, : tokens.shape[1]] = tokens
    row_lengths = lengths.copy()
    for n in range(2):  # the noise of a step is drawn for the whole [R, V] batch
      z = next_logits(rows, row_lengths)
      want = np.asarray(jax.random.categorical(jax.random.fold_in(key, n),
                                               (z + biases[c]) / temperature))
      np.testing.assert_array_equal(got[c, :, n], want)
      rows[np.arange(len(lengths)), row_lengths] = want
      row_lengths += 1


def test_large_biases_force_tokens_and_eos_ends_rows(model):
  force_eos = np.zeros(V)
  force_eos[EOS] = 100.0
  force_three = np.zeros(V)
  force_three[TASK.tokenizer.encode("3")[0]] = 100.0
  tokens, lengths = _sample(model, np.stack([force_eos, force_three]), jax.random.key(0))
  np.testing.assert_array_equal(tokens[0][:, 0], EOS)  # EOS first, then 0 (padding)
  np.testing.assert_array_equal(tokens[0][:, 1:], 0)
  np.testing.assert_array_equal(lengths[0], 1)
  np.testing.assert_array_equal(tokens[1], TASK.tokenizer.encode("3")[0])
  np.testing.assert_array_equal(lengths[1], 7)  # never EOS: all N = 7 tokens


def test_common_random_numbers_only_differ_where_the_bias_matters(model):
  # Bias on a token that is then forbidden: rows that never drew it are unchanged.
  key = jax.random.key(4)
  neutral = np.zeros(V)
  forbid = np.zeros(V)
  forbid[3] = -1e4
  tokens, _ = _sample(model, np.stack([neutral, forbid]), key)
  tokens = np.asarray(tokens)
  untouched = ~(tokens[0] == 3).any(axis=1)
  assert untouched.any()
  np.testing.assert_array_equal(tokens[0][untouched], tokens[1][untouched])
  assert not (tokens[1] == 3).any()


def test_reward_oracle_ranks_candidates_by_mean_true_reward(model):
  model_config, params = model
  prompts = TASK.prompts("train", 4, seed=2)
  respond = zo_lm.make_responder(model_config, params, TASK, prompts, samples_per_prompt=2)
  rows = zo_lm.repeated_prompts(prompts, 2)
  assert rows == [prompts[0], prompts[0], prompts[1], prompts[1], prompts[2], prompts[2],
                  prompts[3], prompts[3]]
  # Candidate 0 writes nothing (R = 0 + 2·1 = 2: c = 0, h = 1); candidate 1 writes only the
  # forbidden digit "7" up to 11 times (h = 1 − 11/n < 0 for n <= 8 digits: R < 2); candidate
  # 2 is the untrained model (near-random digits).
  seven = TASK.tokenizer.encode("7")[0]
  biases = np.zeros((3, V))
  biases[0, EOS] = 100.0
  biases[1, seven] = 100.0
  key = jax.random.key(1)
  texts = respond(jnp.asarray(biases, jnp.float32), key)
  assert texts[0] == [""] * 8 and all(set(t) == {"7"} for t in texts[1])
  means = [TASK.reward_batch(rows, t).mean() for t in texts]
  assert means[0] == pytest.approx(2.0) and means[1] < 2.0
  ranking = zo_lm.reward_oracle(respond, TASK, rows, k=3)(jnp.asarray(biases, jnp.float32), key)
  np.testing.assert_array_equal(ranking, np.argsort(-np.asarray(means), kind="stable"))


def test_terminal_oracle_shows_responses_and_maps_the_answer_back(model):
  model_config, params = model
  prompts = TASK.prompts("train", 8, seed=3)  # R = 8 rows, as in the reward-oracle test
  respond = zo_lm.make_responder(model_config, params, TASK, prompts)
  biases = np.zeros((3, V))
  biases[0, EOS] = 100.0  # candidate 0: "(empty)" responses
  biases[2, TASK.tokenizer.encode("5")[0]] = 100.0  # candidate 2: "55555555555"
  out = io.StringIO()
  oracle = zo_lm.terminal_oracle(respond, prompts, k=2, input_stream=io.StringIO("x\n"),
                                 output_stream=out, seed=1)
  with pytest.raises(EOFError):  # "x" is explained, then the input ends
    oracle(jnp.asarray(biases, jnp.float32), jax.random.key(0))
  text = out.getvalue()
  assert "Invalid ranking" in text and f"{prompts[0]} (empty) | {prompts[1]} (empty)" in text
  slots = {int(m.group(1)): m.group(2) for m in re.finditer(r"  (\d): (.*)", text)}
  fives = next(s for s, line in slots.items() if "55555555555" in line)
  empty = next(s for s, line in slots.items() if "(empty)" in line)
  oracle = zo_lm.terminal_oracle(respond, prompts, k=2,
                                 input_stream=io.StringIO(f"{fives} {empty}\n"),
                                 output_stream=io.StringIO(), seed=1)
  ranking = oracle(jnp.asarray(biases, jnp.float32), jax.random.key(0))
  np.testing.assert_array_equal(ranking, [2, 0])


def test_bad_inputs_are_reported(model):
  model_config, params = model
  respond = zo_lm.make_responder(model_config, params, TASK, TASK.prompts("train", 1, seed=0))
  with pytest.raises(ValueError, match=r"biases must be \[C, V=14\]"):
    respond(jnp.zeros((V,)), jax.random.key(0))
  with pytest.raises(ValueError, match=r"config\.zo\.roundz"):
    from_dict(zo_lm.Config, {"zo": {"roundz": 3}})


def test_config_defaults_are_the_documented_protocol():
  config, fast = zo_lm.Config(), zo_lm.fast_config()
  assert (config.zo.rounds, config.zo.seeds, config.zo.m, config.zo.k) == (20, 3, 10, 10)
  assert (config.zo.mu, config.zo.learning_rate, config.zo.train_prompts) == (1.0, 0.5, 16)
  assert (config.sft.num_demonstrations, config.sft.num_steps) == (2048, 300)
  assert (config.sft.optimizer.learning_rate, config.sft.optimizer.warmup_steps) == (3e-3, 15)
  assert config.model.overrides == {"width": 64, "depth": 2, "mlp_dim": 192, "dtype": "float32"}
  assert (fast.zo.rounds, fast.zo.seeds, fast.zo.m, fast.zo.k) == (6, 1, 6, 6)
  assert (fast.sft.num_steps, fast.sft.batch_size, fast.sft.optimizer.total_steps) == (60, 32, 60)


@pytest.mark.slow  # an experiment binary end to end (CI: pytest -m slow)
def test_fast_run_raises_the_heldout_true_reward(tmp_path):
  """End to end in fast mode: short SFT, 6 rounds of m = 6 candidates, reward rises."""
  out = io.StringIO()
  summary = zo_lm.run(zo_lm.fast_config(), str(tmp_path), output_stream=out)
  reward = np.asarray(summary["heldout_reward"]["mean"])
  assert reward.shape == (7,)
  assert summary["rise"] > 0.02, reward  # measured: see docs/zo.md
  assert reward[1:].max() > reward[0]
  with open(os.path.join(tmp_path, "summary.json"), encoding="utf-8") as fh:
    assert json.load(fh)["rise"] == pytest.approx(summary["rise"])
  assert os.path.getsize(os.path.join(tmp_path, "reward_vs_round.png")) > 1000
  assert "round 6: held-out reward" in out.getvalue()


def test_interactive_run_reads_rankings_from_the_input_stream(model, tmp_path):
  model_config, params = model
  del model_config
  setup.save_params(params, str(tmp_path / "policy"))
  # The shapes of the fast run (m = 6 candidates x 16 rows, 48 held-out rows): no new compiles.
  config = replace_in(zo_lm.fast_config(), "zo", policy=str(tmp_path / "policy"),
                      interactive=True, rounds=2, k=1, display_prompts=16)
  out = io.StringIO()
  summary = zo_lm.run(config, str(tmp_path / "run"), input_stream=io.StringIO("2\n9\n1\n"),
                      output_stream=out)
  text = out.getvalue()
  assert text.count("Candidates:") == 2 and "id 9 is out of range 1..6" in text
  assert summary["oracle"] == "person at the terminal"
  assert len(summary["heldout_reward"]["mean"]) == 3
  # Two unit-direction steps of length 0.5 from b = 0: 0 < |b| <= 1.
  bias = np.array(list(summary["final_bias_per_seed"][0].values()))
  assert 0.0 < np.linalg.norm(bias) <= 1.0 + 1e-3


@pytest.mark.slow  # the binary in a subprocess (CI: pytest -m slow)
def test_binary_runs_the_recipe_from_its_flags(model, tmp_path):
  model_config, params = model
  del model_config
  setup.save_params(params, str(tmp_path / "policy"))
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.zo_lm", f"--workdir={tmp_path / 'run'}", "--fast",
       f"--policy={tmp_path / 'policy'}", "--rounds=1", "--seeds=2", "--m=3", "--k=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  want = dataclasses.asdict(zo_lm.fast_config().zo)
  want.update(policy=str(tmp_path / "policy"), rounds=1, seeds=2, m=3, k=2)
  assert summary["config"] == want
  assert np.asarray(summary["heldout_reward"]["per_seed"]).shape == (2, 2)
  assert "seed 1 round 1: held-out reward" in proc.stdout
