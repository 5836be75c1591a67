r"""ZO-RankSGD on a language model: an output-logit bias learned from rankings of its samples.

*Zeroth-Order Optimization Meets Human Feedback: Provable Learning via Ranking Oracles* (Tang,
Rybin, Chang; ICLR 2024), applied as in `docs/zo.md`. The policy is the tiny decoder fine-tuned
on the `sorting` task (`alignment.recipes.sft`, trained here or loaded from `zo.policy`). Its
weights stay frozen; the optimised variable is a logit bias `b` `[V]` added to the model's
next-token logits at every sampling step (the sampler's `logit_bias` hook, KV cache),

    y_n ~ softmax((z_n + b) / temperature),     z_n = the model's logits given prompt and y_<n.

Each round ZO-RankSGD (`alignment.zo.zo_rank_sgd`) draws m candidates `b + μ·ξ_i`, samples
responses of every candidate to a fixed batch of training prompts, and asks an oracle for the
top-k candidates: by default the mean true reward of their samples (the synthetic task standing
in for a person; only the order is revealed), or with `zo.interactive` a person at the terminal
who reads the responses (`alignment.zo.human_oracle`). All m candidates of a round share the
sampling noise (common random numbers: the same Gumbel noise at every step), so their samples
differ only where the bias changes a token. The held-out true reward of samples of the current
bias is measured every round (not shown to the oracle). Writes `summary.json` and
`reward_vs_round.png` (held-out true reward, mean ± std over seeds).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from typing import Callable, Optional, Sequence, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from alignment import zo
from alignment.models import sampler
from alignment.recipes import config as config_lib
from alignment.recipes import plots, sft
from alignment.training import generation, runs, setup


@dataclasses.dataclass(frozen=True)
class ZO:
  """The ZO-RankSGD rounds: m candidates `b + μξ_i` per round, the oracle's top k, steps of
  length `learning_rate` along the unit direction; `policy`: an SFT workdir or params file
  ("" trains one in `workdir/sft`)."""

  policy: str = ""
  rounds: int = 20
  seeds: int = 3
  m: int = 10
  k: int = 10
  mu: float = 1.0               # perturbation radius in logit units
  learning_rate: float = 0.5    # length of each (unit-direction) step of b
  train_prompts: int = 16       # the fixed batch of training prompts the oracle judges
  samples_per_prompt: int = 2
  eval_prompts: int = 128       # held-out prompts, one sample each, every round
  temperature: float = 1.0
  interactive: bool = False
  display_prompts: int = 3      # prompts shown to a person per candidate (interactive)


def _sft_optimizer(num_steps: int, warmup_steps: int) -> config_lib.Optimizer:
  return config_lib.Optimizer(learning_rate=3e-3, schedule="cosine", warmup_steps=warmup_steps,
                              total_steps=num_steps, b2=0.99)


@dataclasses.dataclass(frozen=True)
class Config(config_lib.Run):
  """The demo's task and decoder, its SFT shortened to 300 steps on 2048 demonstrations."""

  sft: sft.SFT = sft.SFT(num_demonstrations=2048, num_steps=300,
                         optimizer=_sft_optimizer(300, 15))
  zo: ZO = ZO()


def fast_config() -> Config:
  """A smoke-run size: a 60-step SFT, 6 rounds of m = 6 candidates, one seed."""
  config = Config()
  return dataclasses.replace(
      config,
      sft=dataclasses.replace(config.sft, num_demonstrations=512, num_steps=60, batch_size=32,
                              optimizer=_sft_optimizer(60, 3)),
      zo=dataclasses.replace(config.zo, rounds=6, seeds=1, m=6, k=6, train_prompts=8,
                             eval_prompts=48))


# ------------------------------------------------------------------------------------------
# Sampling with a logit bias.


@functools.partial(jax.jit, static_argnums=0, static_argnames=("max_new_tokens", "eos_id"))
def sample_with_biases(
    config, params, biases: jax.Array, prompt_tokens: jax.Array, prompt_lengths: jax.Array,
    key: jax.Array, *, max_new_tokens: int, temperature: float = 1.0,
    eos_id: Optional[int] = None,
) -> tuple[jax.Array, jax.Array]:
  """Samples every prompt once under each of C logit biases, with shared sampling noise.

  `alignment.models.sampler.sample` with `logit_bias=b_c`, vmapped over the C biases with one
  key: step n draws `y_n = argmax((z_n + b_c)/temperature + g_n)` (Gumbel-max) with noise
  `g_n` `[R, V]` that depends on `(key, n)` only, so the C candidates see the same noise (common
  random numbers) and `b = 0` reproduces `sampler.sample`.

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

  def one_bias(bias):
    tokens, _, lengths = sampler.sample(
        config, params, prompt_tokens, prompt_lengths, key, max_new_tokens=max_new_tokens,
        temperature=temperature, eos_id=eos_id, logit_bias=bias)
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


def load_or_train_policy(config: Config, workdir: str):
  """`(task, model_config, params)`: the SFT policy of `config.zo.policy`, or trained now in
  `workdir/sft` by the SFT recipe."""
  task, model_config = config_lib.task_and_model(config.task, config.model)
  if config.zo.policy:
    params = setup.load_params(runs.init_model(model_config, config.seed), config.zo.policy)
  else:
    params = sft.run(config_lib.select(sft.Config, config), os.path.join(workdir, "sft")).params
  return task, model_config, params


def _oracle(config: Config, task, model_config, params, train_prompts, input_stream,
            output_stream):
  """The round's ranking oracle: a person at the terminal, or the mean true reward."""
  zc = config.zo
  if zc.interactive:
    shown = train_prompts[: zc.display_prompts]
    return terminal_oracle(
        make_responder(model_config, params, task, shown, temperature=zc.temperature),
        shown, k=zc.k, input_stream=input_stream, output_stream=output_stream, seed=config.seed)
  return reward_oracle(
      make_responder(model_config, params, task, train_prompts,
                     samples_per_prompt=zc.samples_per_prompt, temperature=zc.temperature),
      task, repeated_prompts(train_prompts, zc.samples_per_prompt), k=zc.k)


def _token_names(tokenizer, vocab_size: int) -> dict[int, str]:
  """Printable names of the vocabulary (`<pad>`, `<bos>`, `<eos>` for the special tokens)."""
  names = {i: tokenizer.decode([i]) or name for i, name in
           ((tokenizer.pad_id, "<pad>"), (tokenizer.bos_id, "<bos>"),
            (tokenizer.eos_id, "<eos>"))}
  names.update({i: tokenizer.decode([i]) for i in range(vocab_size) if i not in names})
  return names


def run(config: Config, workdir: str, *, input_stream: Optional[TextIO] = None,
        output_stream: Optional[TextIO] = None) -> dict:
  """Optimises the logit bias; writes `summary.json` and `reward_vs_round.png`; returns the summary.

  `input_stream` / `output_stream` replace the terminal in interactive mode (tests).
  """
  zc = config.zo
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  task, model_config, params = load_or_train_policy(config, workdir)
  policy_s = time.time() - start
  train_prompts = task.prompts("train", zc.train_prompts, seed=config.seed + 1)
  eval_prompts = task.prompts("heldout", zc.eval_prompts, seed=config.seed)
  evaluate_respond = make_responder(model_config, params, task, eval_prompts,
                                    temperature=zc.temperature)
  opt = zo.zo_rank_sgd(zc.learning_rate, m=zc.m, mu=zc.mu)
  oracle = _oracle(config, task, model_config, params, train_prompts, input_stream,
                   output_stream)
  seeds = [config.seed] if zc.interactive else [config.seed + s for s in range(zc.seeds)]
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
  token_names = _token_names(task.tokenizer, model_config.vocab_size)
  mean_bias = np.mean(biases, axis=0)
  final_texts = evaluate_respond(jnp.asarray(mean_bias)[None], jax.random.key(config.seed + 2))
  start_texts = evaluate_respond(jnp.zeros((1, model_config.vocab_size)),
                                 jax.random.key(config.seed + 2))
  summary = {
      "config": dataclasses.asdict(zc),
      "policy": zc.policy or os.path.join(workdir, "sft"),
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
  plt = plots.pyplot()

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
  plots.save(fig, path)
