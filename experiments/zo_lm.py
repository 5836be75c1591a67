r"""ZO-RankSGD on a language model: an output-logit bias learned from rankings of its samples.

*Zeroth-Order Optimization Meets Human Feedback: Provable Learning via Ranking Oracles* (Tang,
Rybin, Chang; ICLR 2024), ALGORITHMS.md §7 (issue 11, item 6). The policy is the tiny decoder
fine-tuned on the `sorting` task (`experiments.sft`, trained here or loaded with `--policy`).
Its weights stay frozen; the optimised variable is a logit bias `b` `[V]` added to the model's
next-token logits at every sampling step,

    y_n ~ softmax((z_n + b) / temperature),     z_n = the model's logits given prompt and y_<n.

Each round ZO-RankSGD (`alignment.zo.zo_rank_sgd`) draws m candidates `b + μ·ξ_i`, samples
responses of every candidate to a fixed batch of training prompts, and asks an oracle for the
top-k candidates: by default the mean true reward of their samples (the synthetic task standing
in for a person; only the order is revealed), or with `--interactive` a person at the terminal
who reads the responses (`alignment.zo.human_oracle`). All m candidates of a round share the
sampling noise (common random numbers: the same Gumbel noise at every step), so their samples
differ only where the bias changes a token. The held-out true reward of samples of the current
bias is measured every round (not shown to the oracle).

The model has no logit hook and a bias cannot be folded into the LM head (the final hidden
state has no constant component), so sampling is a small local loop: every step re-runs
`transformer.apply` over a `[P + N]`-token buffer (no KV cache; prompts are ≤ 10 tokens and
responses ≤ 11) and adds b to `transformer.logits` of the last real position. With `b = 0` it
draws exactly the samples of `alignment.models.sampler.sample` (same keys, same logits).

    python -m experiments.zo_lm --workdir=/tmp/zo_lm [--policy=/tmp/sft] [--fast]
    python -m experiments.zo_lm --workdir=/tmp/zo_lm --interactive --m=4 --k=2 --rounds=10

Writes `summary.json` and `reward_vs_round.png` (held-out true reward, mean ± std over seeds).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence, TextIO

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alignment import zo
from alignment.models import transformer
from alignment.training import generation, runs, setup
from experiments import _flags, _overrides, _plots, sft
from experiments.configs import demo as demo_config

FLAGS = flags.FLAGS
if __name__ == "__main__":  # --workdir comes from experiments._flags (imported by sft)
  flags.DEFINE_string("policy", None, "SFT workdir or params file (default: train one here).")
  flags.DEFINE_integer("rounds", None, "ZO-RankSGD rounds (m oracle queries each).")
  flags.DEFINE_integer("seeds", None, "Independent runs from the same policy.")
  flags.DEFINE_integer("m", None, "Candidates per round.")
  flags.DEFINE_integer("k", None, "Candidates the oracle returns (top-k, best first).")
  flags.DEFINE_bool("interactive", False, "A person ranks the candidates at the terminal.")
  flags.DEFINE_bool("fast", False, "Tiny smoke run.")

_OVERRIDES = ("policy", "rounds", "seeds", "m", "k", "interactive")


def get_config(fast: bool = False) -> ml_collections.ConfigDict:
  """The demo's task, model and SFT sections (SFT shortened) plus the `zo` section."""
  c = demo_config.get_config()
  c.sft.num_demonstrations = 2048
  c.sft.num_steps = 300
  c.sft.optimizer = demo_config.optimizer(3e-3, 300, 15)
  c.zo = ml_collections.ConfigDict(dict(
      policy="",              # SFT workdir / params file; "" trains one in workdir/sft
      rounds=20,
      seeds=3,
      m=10,
      k=10,
      mu=1.0,                 # perturbation radius in logit units
      learning_rate=0.5,      # length of each (unit-direction) step of b
      train_prompts=16,       # the fixed batch of training prompts the oracle judges
      samples_per_prompt=2,
      eval_prompts=128,       # held-out prompts, one sample each, every round
      temperature=1.0,
      interactive=False,
      display_prompts=3,      # prompts shown to a person per candidate (interactive)
  ))
  if fast:
    c.sft.num_demonstrations, c.sft.num_steps, c.sft.batch_size = 512, 60, 32
    c.sft.optimizer = demo_config.optimizer(3e-3, 60, 3)
    c.zo.update(rounds=6, seeds=1, m=6, k=6, train_prompts=8, eval_prompts=48)
  return c


# ------------------------------------------------------------------------------------------
# Sampling with a logit bias.


@functools.partial(jax.jit, static_argnums=0,
                   static_argnames=("max_new_tokens", "eos_id"))
def sample_with_biases(
    config, params, biases: jax.Array, prompt_tokens: jax.Array, prompt_lengths: jax.Array,
    key: jax.Array, *, max_new_tokens: int, temperature: float = 1.0,
    eos_id: Optional[int] = None,
) -> tuple[jax.Array, jax.Array]:
  """Samples every prompt once under each of C logit biases, with shared sampling noise.

  Step n draws `y_n = argmax((z_n + b_c)/temperature + g_n)` (Gumbel-max), with `z_n` the model's
  logits given prompt and `y_<n` and Gumbel noise `g_n` `[R, V]` that depends on `(key, n)`
  only, i.e. `jax.random.categorical(fold_in(key, n), ·)` as in `alignment.models.sampler`:
  the C candidates see the same noise (common random numbers) and `b = 0` reproduces
  `sampler.sample`. No KV cache: step n re-runs the decoder over a `[P + N]`-token buffer
  (causal attention never reads the unwritten slots) and reads the hidden state at
  `prompt_lengths + n − 1`.

  Args:
    config, params: the frozen model.
    biases: `[C, V]` float logit biases.
    prompt_tokens: `[R, P]` int, right-padded; prompt_lengths: `[R]` int in `[1, P]`.
    key: PRNG key.
    max_new_tokens: N (static); temperature: > 0; eos_id: a row stops after emitting it.

  Returns:
    `tokens [C, R, N]` int32 (0 after EOS) and `lengths [C, R]` int32 (tokens up to and
    including EOS; N if none).
  """
  num_rows, prompt_width = prompt_tokens.shape
  width = prompt_width + max_new_tokens
  buffer = jnp.zeros((num_rows, width), jnp.int32).at[:, :prompt_width].set(prompt_tokens)
  positions = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), (num_rows, width))
  segments = jnp.ones((num_rows, width), jnp.int32)
  rows = jnp.arange(num_rows)

  def one_bias(bias):
    def body(n, state):
      buffer, tokens, done, lengths = state
      cursor = prompt_lengths + n  # [R]: the slot of token n
      hidden = transformer.apply(config, params, buffer, positions, segments)
      logits = transformer.logits(config, params, hidden[rows, cursor - 1]) + bias
      token = jax.random.categorical(jax.random.fold_in(key, n), logits / temperature)
      token = jnp.where(done, 0, token).astype(jnp.int32)
      lengths = lengths + (~done).astype(jnp.int32)
      if eos_id is not None:
        done = done | (token == eos_id)
      return (buffer.at[rows, cursor].set(token), tokens.at[:, n].set(token), done, lengths)

    init = (buffer, jnp.zeros((num_rows, max_new_tokens), jnp.int32),
            jnp.zeros((num_rows,), bool), jnp.zeros((num_rows,), jnp.int32))
    _, tokens, _, lengths = jax.lax.fori_loop(0, max_new_tokens, body, init)
    return tokens, lengths

  return jax.vmap(one_bias)(jnp.asarray(biases, jnp.float32))


Responder = Callable[[jax.Array, jax.Array], list]


def make_responder(model_config, params, task, prompts: Sequence[str], *,
                   samples_per_prompt: int = 1, temperature: float = 1.0) -> Responder:
  """`respond(biases [C, V], key) -> C lists of R = len(prompts)·samples_per_prompt texts`.

  Row r answers `prompts[r // samples_per_prompt]` (prompts repeated, as `repeated_prompts`).
  """
  vocab_size = model_config.vocab_size
  tokens, lengths = generation.encode_prompts(
      task.tokenizer, list(prompts), task.max_prompt_length + 1)
  tokens = np.repeat(tokens, samples_per_prompt, axis=0)
  lengths = np.repeat(lengths, samples_per_prompt, axis=0)

  def respond(biases, key):
    biases = jnp.asarray(biases)
    if biases.ndim != 2 or biases.shape[1] != vocab_size:
      raise ValueError(f"respond: biases must be [C, V={vocab_size}], got {biases.shape}.")
    out, out_lengths = sample_with_biases(
        model_config, params, biases, tokens, lengths, key,
        max_new_tokens=task.max_response_length + 1, temperature=temperature,
        eos_id=task.tokenizer.eos_id)
    out, out_lengths = np.asarray(out), np.asarray(out_lengths)
    return [generation.decode_responses(task.tokenizer, t, n) for t, n in zip(out, out_lengths)]

  return respond


def repeated_prompts(prompts: Sequence[str], samples_per_prompt: int) -> list[str]:
  """The prompt of every row of a responder: each prompt `samples_per_prompt` times."""
  return [p for p in prompts for _ in range(samples_per_prompt)]


# ------------------------------------------------------------------------------------------
# Oracles over candidate biases.


def reward_oracle(respond: Responder, task, row_prompts: Sequence[str], *, k: int):
  """(m, k)-ranking oracle: the candidates with the highest mean true reward of their samples.

  `oracle(candidates [m, V], key) -> int32 [k]` (best first, minimisation of `f = −mean
  reward`); it runs on the host (the reward is Python over decoded text), so call it outside
  `jit`. All candidates are sampled with the same key (common random numbers).
  """

  def oracle(candidates, key):
    texts = respond(candidates, key)
    rewards = task.reward_batch(list(row_prompts) * len(texts), [t for ts in texts for t in ts])
    return zo.rank_oracle(-rewards.reshape(len(texts), -1).mean(axis=1), k=k)

  return oracle


def format_responses(prompts: Sequence[str], responses: Sequence[str]) -> str:
  """One line showing each prompt and its response: `52817: 1258 | 9031: 0139`."""
  return " | ".join(f"{p} {r if r else '(empty)'}" for p, r in zip(prompts, responses))


def terminal_oracle(respond: Responder, row_prompts: Sequence[str], *, k: int,
                    input_stream: Optional[TextIO] = None,
                    output_stream: Optional[TextIO] = None, seed: int = 0):
  """(m, k)-ranking oracle asking a person (`zo.human_oracle`), shown each candidate's samples.

  The person sees the m candidates as lines of response texts (shuffled) and types the ids of
  the best k; biases are never shown.
  """
  human = zo.human_oracle(k=k, summarize=str, input_stream=input_stream,
                          output_stream=output_stream, seed=seed)

  def oracle(candidates, key):
    texts = respond(candidates, key)
    return human(np.array([format_responses(row_prompts, t) for t in texts]), key)

  return oracle


# ------------------------------------------------------------------------------------------
# The run.


def evaluate_bias(respond: Responder, task, row_prompts: Sequence[str], bias, key) -> dict:
  """Mean true reward, its attributes and the mean response length of samples under `bias`."""
  (texts,) = respond(jnp.asarray(bias)[None], key)
  attributes = task.attributes_batch(list(row_prompts), texts)
  out = {"reward": float(task.reward_batch(list(row_prompts), texts).mean())}
  out.update({name: float(np.mean(v)) for name, v in attributes.items()})
  out["response_chars"] = float(np.mean([len(t) for t in texts]))
  return out


def optimise_bias(opt: zo.ZeroOrderOptimizer, oracle, evaluate: Callable[[jax.Array], dict],
                  vocab_size: int, key: jax.Array, rounds: int,
                  on_round: Optional[Callable[[int, dict], None]] = None):
  """Runs `rounds` ZO-RankSGD steps from `b = 0`; returns `(b [V], rows)`.

  `rows[t]` is `evaluate(b_t)` (held-out metrics) after t rounds, `t = 0..rounds`.
  """
  bias = jnp.zeros((vocab_size,), jnp.float32)
  rows = [evaluate(bias)]
  if on_round:
    on_round(0, rows[0])
  for t in range(1, rounds + 1):
    bias, key, _ = opt.step(bias, key, oracle)
    rows.append(evaluate(bias))
    if on_round:
      on_round(t, rows[-1])
  return bias, rows


def load_or_train_policy(config, workdir: str):
  """`(task, model_config, params)`: the SFT policy of `config.zo.policy`, or trained now."""
  task, model_config = runs.task_and_model(config)
  if config.zo.policy:
    params = setup.load_params(runs.init_model(model_config, config.seed), config.zo.policy)
  else:
    params = sft.run(config, os.path.join(workdir, "sft"))
  return task, model_config, params


def run(config_or_args: Any, workdir: str, *, input_stream: Optional[TextIO] = None,
        output_stream: Optional[TextIO] = None) -> dict:
  """Optimises the logit bias; writes `summary.json` and `reward_vs_round.png`; returns the summary.

  `input_stream` / `output_stream` replace the terminal in interactive mode (tests).
  """
  config = _overrides.resolve_config(config_or_args, get_config, _OVERRIDES, where="zo_lm.run",
                                     section="zo")
  zc = config.zo
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  task, model_config, params = load_or_train_policy(config, workdir)
  policy_s = time.time() - start
  tokenizer = task.tokenizer
  train_prompts = task.prompts("train", zc.train_prompts, seed=config.seed + 1)
  eval_prompts = task.prompts("heldout", zc.eval_prompts, seed=config.seed)
  evaluate_respond = make_responder(model_config, params, task, eval_prompts,
                                    temperature=zc.temperature)
  opt = zo.zo_rank_sgd(zc.learning_rate, m=zc.m, mu=zc.mu)
  if zc.interactive:
    shown = train_prompts[: zc.display_prompts]
    oracle = terminal_oracle(
        make_responder(model_config, params, task, shown, temperature=zc.temperature),
        shown, k=zc.k, input_stream=input_stream, output_stream=output_stream, seed=config.seed)
    seeds = [config.seed]
  else:
    oracle = reward_oracle(
        make_responder(model_config, params, task, train_prompts,
                       samples_per_prompt=zc.samples_per_prompt, temperature=zc.temperature),
        task, repeated_prompts(train_prompts, zc.samples_per_prompt), k=zc.k)
    seeds = [config.seed + s for s in range(zc.seeds)]
  out = output_stream or sys.stdout
  if zc.interactive:
    out.write(f"Each candidate is one line of responses ('prompt response | ...') of the "
              f"{task.name!r} policy under a different logit bias; rank them by the quality "
              f"of their responses ({zc.rounds} rounds).\n")

  curves, biases = [], []
  for seed in seeds:
    eval_key = jax.random.fold_in(jax.random.key(seed), 1)  # fixed over rounds: paired curve

    def on_round(t, row, seed=seed):
      attributes = ", ".join(f"{name} {value:.3f}" for name, value in row.items()
                             if name != "reward")
      out.write(f"[zo_lm] seed {seed} round {t}: held-out reward {row['reward']:.3f} "
                f"({attributes})\n")
      out.flush()

    def evaluate(bias, key=eval_key):
      return evaluate_bias(evaluate_respond, task, eval_prompts, bias, key)

    bias, rows = optimise_bias(
        opt, oracle, evaluate, model_config.vocab_size,
        jax.random.fold_in(jax.random.key(seed), 0), zc.rounds, on_round=on_round)
    curves.append(rows)
    biases.append(np.asarray(bias))

  reward = np.array([[r["reward"] for r in rows] for rows in curves])  # [seeds, rounds + 1]
  token_names = {i: tokenizer.decode([i]) or name for i, name in
                 ((tokenizer.pad_id, "<pad>"), (tokenizer.bos_id, "<bos>"),
                  (tokenizer.eos_id, "<eos>"))}
  token_names.update({i: tokenizer.decode([i]) for i in range(model_config.vocab_size)
                      if i not in token_names})
  mean_bias = np.mean(biases, axis=0)
  final_texts = evaluate_respond(jnp.asarray(mean_bias)[None], jax.random.key(config.seed + 2))
  start_texts = evaluate_respond(jnp.zeros((1, model_config.vocab_size)),
                                 jax.random.key(config.seed + 2))
  summary = {
      "config": config.zo.to_dict(),
      "policy": config.zo.policy or os.path.join(workdir, "sft"),
      "oracle": "person at the terminal" if zc.interactive else "mean true reward (rankings only)",
      "queries_per_round": zc.m,
      "heldout_reward": {
          "mean": reward.mean(0).tolist(), "std": reward.std(0).tolist(),
          "per_seed": reward.tolist(),
      },
      "heldout_attributes_mean": {
          name: np.mean([[r[name] for r in rows] for rows in curves], axis=0).tolist()
          for name in curves[0][0] if name != "reward"},
      "start_reward": float(reward[:, 0].mean()),
      "final_reward_mean": float(reward[:, -1].mean()),
      "final_reward_std": float(reward[:, -1].std()),
      "best_round_reward_mean": float(reward.mean(0).max()),
      "rise": float(reward[:, -1].mean() - reward[:, 0].mean()),
      "final_bias_per_seed": [{token_names[i]: round(float(b[i]), 3) for i in range(b.size)}
                              for b in biases],
      "examples": [{"prompt": p, "before": a, "after": b, "optimum": task.optimum(p)}
                   for p, a, b in list(zip(eval_prompts, start_texts[0], final_texts[0]))[:8]],
      "policy_s": round(policy_s, 1),
      "runtime_s": round(time.time() - start, 1),
  }
  summary["sentence"] = (
      f"From rankings of {zc.m} candidates per round (top {zc.k}), {zc.rounds} rounds of "
      f"ZO-RankSGD on a {model_config.vocab_size}-entry logit bias move the held-out true "
      f"reward of the SFT policy's samples from {summary['start_reward']:.3f} to "
      f"{summary['final_reward_mean']:.3f} ± {summary['final_reward_std']:.3f} "
      f"({len(seeds)} seed(s)).")
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as fh:
    json.dump(summary, fh, indent=1)
  _plot(summary, os.path.join(workdir, "reward_vs_round.png"))
  out.write(summary["sentence"] + "\n")
  return summary


def _plot(summary: dict, path: str) -> None:
  plt = _plots.pyplot()

  mean = np.asarray(summary["heldout_reward"]["mean"])
  std = np.asarray(summary["heldout_reward"]["std"])
  rounds = np.arange(mean.size)
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  axes[0].plot(rounds, mean, marker="o", label="ZO-RankSGD logit bias")
  axes[0].fill_between(rounds, mean - std, mean + std, alpha=0.2)
  axes[0].axhline(mean[0], color="gray", ls="--", lw=1, label="SFT policy (b = 0)")
  n = len(summary["heldout_reward"]["per_seed"])
  axes[0].set(xlabel="round", ylabel=f"held-out true reward (mean ± std, {n} seed(s))",
              title=f"{summary['oracle']}, m={summary['config']['m']}, "
                    f"k={summary['config']['k']}")
  axes[0].legend()
  for name, values in summary["heldout_attributes_mean"].items():
    if name != "response_chars":
      axes[1].plot(rounds, values, marker=".", label=name)
  axes[1].set(xlabel="round", ylabel="held-out attribute (mean over seeds)",
              title="attributes of the reward")
  axes[1].legend()
  _plots.save(fig, path)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  overrides = {"fast": FLAGS.fast}
  for name in _OVERRIDES:
    value = FLAGS[name].value
    if value is not None and (name != "interactive" or value):
      overrides[name] = value
  if FLAGS.interactive:  # a person ranks: small rounds unless set on the command line
    overrides.setdefault("m", 4)
    overrides.setdefault("k", 2)
    overrides.setdefault("seeds", 1)
  run(overrides, _flags.WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
