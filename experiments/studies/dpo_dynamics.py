"""Shared stages of studies 3 (ranking accuracy) and 6 (likelihood displacement).

Both studies follow one DPO run per seed from the SFT policy on K = 2 pairs sampled from it and
rated by the config's rater, and look at the policy's log-probabilities (study 3) or its hidden
states (study 6) on those pairs at several points of training. This module holds what they
share, on top of `common.py`:

- the cached DPO cell (`common.train_and_evaluate` with a checkpoint every `eval_every` steps,
  all kept) and the parameters of each checkpoint, restored from its Orbax checkpoint;
- held-out pairs, sampled and rated like the training pairs on held-out prompts;
- the rater's preference probability α of each pair, derived from `alignment.data.raters`;
- pair log-probs, CHES scores and per-pair gradient products under any parameters, over
  `runs.fixed_batches` (`PairScorer`).

Both studies can share one workdir (the DPO cells are then trained once). Layout, in addition to
that of `common.py`:
    seed_{s}/data_k2/preferences.jsonl          training pairs (`common.preference_lists`)
    seed_{s}/data_k2_heldout/preferences.jsonl  held-out pairs
    seed_{s}/dpo/train/checkpoints/{step}/      the DPO run, every `eval_every` steps
    seed_{s}/dpo/row.json                       its evaluation (win rate, reward, KL)
    seed_{s}/dpo_lr{f}x/                        the same at f × the learning rate (study 3)
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignment import metrics
from alignment.data import formats
from alignment.data.raters import preference_probability
from alignment.models import transformer
from alignment.recipes import preferences
from alignment.training import optim, runs, setup
from alignment.training.checkpoint import Checkpointer
from alignment.training.step import init_train_state
from experiments.studies import common

RUN = "dpo"
# Checkpoint interval of the DPO cells in full and quick mode; both studies use the same, so a
# cell trained by either serves the other.
EVAL_EVERY = {"full": 50, "quick": 2}
TRAIN_DATA = "k2"
HELDOUT_DATA = "k2_heldout"


def eval_steps(num_steps: int, every: int) -> list[int]:
  """`0, every, 2·every, …` up to `num_steps`, which is always included (the final policy)."""
  if num_steps < 1 or every < 1:
    raise ValueError(f"eval_steps: need num_steps >= 1 and every >= 1, got {num_steps}, {every}.")
  return sorted(set(range(0, num_steps + 1, every)) | {num_steps})


def run_name(lr_factor: float) -> str:
  """The DPO cell at `lr_factor` × the config's learning rate: `dpo`, or e.g. `dpo_lr0.1x`."""
  return RUN if lr_factor == 1.0 else f"{RUN}_lr{lr_factor:g}x"


def dpo_config(config, seed: int, *, eval_every: int, lr_factor: float = 1.0):
  """`config` for seed `seed`: DPO (β = `loss.beta`) on pairs at `lr_factor` × the learning
  rate, a kept checkpoint every `eval_every` steps (and at the end), so that every evaluated
  policy can be restored."""
  num_steps = int(config.train.num_steps)
  optimizer = config.train.optimizer.copy_and_resolve_references()
  with optimizer.unlocked():
    optimizer.learning_rate = float(optimizer.learning_rate) * lr_factor
  return common.with_overrides(
      config, seed=seed, preferences=dict(k=2),
      loss={"name": "dpo", "beta": float(config.loss.beta)},
      train=dict(checkpoint_every=eval_every, optimizer=optimizer,
                 keep_checkpoints=len(eval_steps(num_steps, eval_every))))


def chosen_first(records: Sequence[dict]) -> list[dict]:
  """Pairs with the rater's chosen response in slot 0 (labels `[1, 0]`), order of pairs kept."""
  for i, r in enumerate(records):
    if len(r["responses"]) != 2 or r["scores"][0] == r["scores"][1]:
      raise ValueError(f"chosen_first: record {i} is not a strictly ranked pair: {r['scores']}.")
  return common.sorted_best_first(records)


def trained_mask(pairs: Sequence[dict]) -> np.ndarray:
  """`[N]` bool: the pairs the trainer keeps, i.e. that the default bad-input policy of
  `alignment.data.formats` (which drops empty and duplicate responses) leaves as pairs."""
  return np.array([len(list(formats.canonicalize([p], layout="listwise"))) == 1 for p in pairs])


def heldout_pairs(config, workdir: str, *, policy: str) -> list[dict]:
  """`evaluate.num_prompts` pairs on held-out prompts, sampled from `policy` and rated like the
  training pairs (`config.preferences`), cached in `seed_{s}/data_k2_heldout`."""
  out = os.path.join(common.seed_dir(workdir, config.seed), f"data_{HELDOUT_DATA}")
  path = os.path.join(out, preferences.DATA_FILE)
  if not os.path.exists(path):
    preferences.run(common.recipe_config(preferences.Config, config, preferences=dict(
        policy=policy, split="heldout", num_prompts=int(config.evaluate.num_prompts))), out)
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def seed_stages(config, workdir: str, *, eval_every: int, lr_factor: float = 1.0) -> dict:
  """The cached stages of one seed (`config.seed`): SFT policy, training and held-out pairs
  (chosen first) and the DPO cell `run_name(lr_factor)`.

  Returns `{config, sft, records, train, heldout, row, lr_factor, run, train_dir}`: `records`
  are the training pairs as rated (the DPO data), `train` the same pairs chosen first.
  """
  config = dpo_config(config, config.seed, eval_every=eval_every, lr_factor=lr_factor)
  run = run_name(lr_factor)
  sft = common.sft_policy(config, workdir)
  records = common.preference_lists(config, workdir, TRAIN_DATA, policy=sft)
  data = os.path.join(common.seed_dir(workdir, config.seed), f"data_{TRAIN_DATA}",
                      preferences.DATA_FILE)
  row = common.train_and_evaluate(config, workdir, run, data=data, policy=sft,
                                  info={"objective": "dpo", "beta": float(config.loss.beta)})
  return {
      "config": config, "sft": sft, "row": row, "records": records,
      "train": chosen_first(records),
      "heldout": chosen_first(heldout_pairs(config, workdir, policy=sft)),
      "lr_factor": lr_factor, "run": run,
      "train_dir": os.path.join(common.seed_dir(workdir, config.seed), run, "train"),
  }


def rater_alpha(config, pairs: Sequence[dict]) -> np.ndarray:
  """α `[N]` of chosen-first `pairs` under the rater of `config.preferences`."""
  cfg = config.preferences
  temperature = {"plackett_luce": float(cfg.rater_temperature), "true_reward": 0.0}.get(cfg.rater)
  if temperature is None:
    raise ValueError(f"rater_alpha: no preference probability for rater {cfg.rater!r}.")
  return preference_probability([p["rewards"] for p in pairs], temperature=temperature,
                                flip_rate=float(cfg.flip_rate))


def param_template(config):
  """Fresh decoder parameters of `config`: the structure parameter files are read into."""
  _, model_config = common.task_and_model(config)
  return runs.init_model(model_config, config.seed)


def checkpoint_params(config, train_dir: str, steps: Sequence[int], *, initial: str) -> dict:
  """`{step: params}` of a run: step 0 is `initial` (its init policy), the others are restored
  from the run's Orbax checkpoints (`train_dir/checkpoints`, written by `runs.train_run`)."""
  template = param_template(config)
  abstract = init_train_state(template, optim.make_optimizer(config.train.optimizer),
                              jax.random.key(config.seed))
  checkpointer = Checkpointer(os.path.join(train_dir, "checkpoints"))
  missing = sorted(set(s for s in steps if s > 0) - set(checkpointer.steps()))
  if missing:
    raise FileNotFoundError(f"checkpoint_params: no checkpoint of steps {missing} in "
                            f"{checkpointer.directory} (has {checkpointer.steps()}).")
  out = {s: setup.load_params(template, initial) if s == 0
         else checkpointer.restore(s, abstract)[0].params for s in steps}
  checkpointer.close()
  return out


class PairScorer:
  """Log-probs, CHES scores and per-pair gradient products of pairs under any parameters (one
  compilation per quantity).

  Batches are `runs.fixed_batches` of `evaluate.batch_size` pairs (padded by repetition; the
  padding is cut off), the layout of training.
  """

  def __init__(self, config):
    self.task, self.model_config = common.task_and_model(config)
    self.batch_size = int(config.evaluate.batch_size)
    logp_fn = setup.logp_fn(self.model_config, chunk_size=config.model.logprob_chunk)
    self._logps = jax.jit(logp_fn)
    self._hidden = jax.jit(lambda params, tokens, positions, segments: transformer.apply(
        self.model_config, params, tokens, positions, segments))
    pair_logps = lambda params, row: logp_fn(params, row)[0]  # a pair's row -> [2]
    self._grad_products = jax.jit(jax.vmap(
        lambda params, row: _grad_products(jax.jacrev(pair_logps)(params, row)),
        in_axes=(None, 0)))

  def batches(self, pairs: Sequence[dict]) -> list[dict]:
    return runs.fixed_batches(pairs, runs.task_encoding(self.task), batch_size=self.batch_size,
                              list_size=2)

  def hidden(self, params: Any, batch: dict) -> jax.Array:
    """Final-normed hidden states `[B, 2, T, D]` of a batch (`transformer.apply`)."""
    return self._hidden(params, batch["tokens"], batch["positions"], batch["segment_ids"])

  def logps(self, params: Any, pairs: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """`(log-probs [N, 2], completion token counts [N, 2])` of the pairs' responses."""
    out = [jax.device_get(self._logps(params, b)) for b in self.batches(pairs)]
    n = len(pairs)
    return (np.concatenate([o[0] for o in out])[:n].astype(np.float64),
            np.concatenate([o[1] for o in out])[:n])

  def first_order_change(self, params: Any, pairs: Sequence[dict]) -> np.ndarray:
    """`⟨g_w, g_w − g_l⟩` `[N]`, `g = ∇_θ lp(y)` at `params`: the first-order change of
    `lp(y_w)` under one gradient step on the pair's own DPO loss, per unit of `η·β·σ(−βh)`.

    The DPO gradient is `∇L = −β·σ(−βh)·(g_w − g_l)` (reference fixed), so a step
    `θ' = θ − η∇L` changes `lp(y_w)` by `η·β·σ(−βh)·⟨g_w, g_w − g_l⟩ + O(η²)`: negative values
    are pairs that displace their own chosen response, the quantity CHES stands in for
    (Razin et al., ICLR 2025, with the hidden states in place of the full gradient).
    """
    keys = ("tokens", "positions", "segment_ids", "completion_mask")
    out = []
    for b in self.batches(pairs):
      ww, wl = self._grad_products(params, {k: b[k] for k in keys})
      out.append(np.asarray(ww) - np.asarray(wl))
    return np.concatenate(out)[:len(pairs)].astype(np.float64)

  def ches(self, params: Any, pairs: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """`(CHES [N], LN-CHES [N])` (`alignment.metrics.ches`) under `params`.

    The hidden states are the final-normed outputs of `transformer.apply` (the inputs of the LM
    head); the window of a response is `metrics.predicting_window_mask` of its row's
    `completion_mask`: position t is in it iff token t + 1 is a completion token, i.e. from the
    last prompt position to the second-to-last response position (EOS included in the
    response), with padding outside by construction.
    """
    scores = []
    for b in self.batches(pairs):
      hidden = self.hidden(params, b)  # [B, 2, T, D]
      window = metrics.predicting_window_mask(b["completion_mask"])  # [B, 2, T]
      scores.append([np.asarray(f(hidden[:, 0], window[:, 0], hidden[:, 1], window[:, 1]))
                     for f in (metrics.ches, metrics.ln_ches)])
    n = len(pairs)
    return tuple(np.concatenate([s[i] for s in scores])[:n].astype(np.float64) for i in (0, 1))


def _grad_products(jacobian) -> tuple[jax.Array, jax.Array]:
  """`(⟨g_w, g_w⟩, ⟨g_w, g_l⟩)` from a parameter tree of `[2, ...]` gradients (slot 0 = y_w)."""
  leaves = [x.reshape(2, -1).astype(jnp.float32) for x in jax.tree.leaves(jacobian)]
  return (sum(jnp.sum(x[0] * x[0]) for x in leaves), sum(jnp.sum(x[0] * x[1]) for x in leaves))
