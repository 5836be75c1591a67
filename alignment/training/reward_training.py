"""Training and evaluating reward models: Bradley–Terry on pairs, Plackett–Luce on lists.

The losses are `alignment.losses.ranking` objectives applied to the rewards of
`alignment.models.reward_model`, built as `make_train_step` losses
`(params, batch, loss_state, frozen, rng) -> ((sum, count), (loss_state, aux))`:

- Bradley–Terry (`bradley_terry_loss`): `ℓ = −logσ((r_i − r_j)/τ)` on every pair with
  `labels_i > labels_j` (`pairwise_logistic_loss`), mean over valid pairs; with K = 2 and labels
  `[1, 0]` the classic pairwise reward-model loss `−logσ(r_w − r_l)`. Paper: *Rank Analysis of
  Incomplete Block Designs: I. The Method of Paired Comparisons* (Bradley & Terry, 1952).
- Plackett–Luce (`plackett_luce_loss`): ListMLE on `r/τ` (`listmle_loss`), the negative
  log-likelihood of the labelled order, mean over lists; tied labels are ordered at random by
  default. Papers: *The Analysis of Permutations* (Plackett, 1975); *Listwise
  Approach to Learning to Rank* (Xia et al., 2008).

Reward heads and labels (`labels=`), with rewards `r [B, K, A]` (A heads) and head weights `w [A]`:

- `"combined"`: one score `s = Σ_a w_a·r_a [B, K]` ranked by `batch["labels"] [B, K]` (for A = 1
  and w = [1] the scalar reward model);
- `"per_attribute"`: head a ranked by `batch["attribute_labels"][..., a]` (`[B, K, A]`); the
  attributes are extra leading list axes and `w_a` multiplies the terms of head a, so the loss is
  the mean over all (attribute, pair) — or (attribute, list) — items, each weighted by `w_a`.

A reward model is identified only up to a shift (and, across heads, a scale) per head, so the
weighted sum of separately trained heads ranks like the weighted true reward only approximately.

Data: `heads_and_weights` names the heads, `preference_arrays` turns rated candidate lists into
batch arrays (the layout of docs/interfaces.md, "Batches"), `array_batches` streams them and
`predict_rewards`/`ranking_evaluation` measure held-out accuracy; `load_reward_model` reads a
trained model back (e.g. as an RLHF reward source).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np

from alignment import losses
from alignment import metrics as metrics_lib
from alignment import parallel
from alignment.arrays import check_positive
from alignment.losses import ranking
from alignment.models import reward_model
from alignment.training import generation, runs, setup

Array = jax.Array
ScoreFn = Callable[[Any, Mapping[str, Array]], Array]

LABEL_MODES = ("combined", "per_attribute")
HEADS = ("scalar", "attributes")
SUMMARY_FILE = "eval.json"  # a trained reward model's summary: its heads and head weights


def score_fn(model_config) -> ScoreFn:
  """`(params, batch) -> rewards [B, K, A]` over the batch layout of docs/interfaces.md."""

  def fn(params, batch):
    return reward_model.reward_scores(model_config, params, batch["tokens"], batch["positions"],
                                      batch["segment_ids"], batch["completion_mask"])

  return fn


def _head_weights(head_weights: Optional[Sequence[float]], num_heads: int, where: str) -> Array:
  """`w [A]` float32 (ones by default); a length other than A raises a ValueError."""
  if head_weights is None:
    return jnp.ones((num_heads,), jnp.float32)
  w = jnp.asarray(head_weights, jnp.float32)
  if w.shape != (num_heads,):
    raise ValueError(f"{where}: head_weights has shape {w.shape}, but the model has "
                     f"{num_heads} reward heads.")
  return w


def combine_heads(rewards: Array, head_weights: Optional[Sequence[float]] = None) -> Array:
  """`s = Σ_a w_a·r_a`: rewards `[..., A]` -> scores `[...]` (w = ones by default)."""
  rewards = jnp.asarray(rewards, jnp.float32)
  w = _head_weights(head_weights, rewards.shape[-1], "combine_heads")
  return jnp.einsum("...a,a->...", rewards, w)


def ranking_inputs(
    rewards: Array, batch: Mapping[str, Array], *, labels: str = "combined",
    head_weights: Optional[Sequence[float]] = None,
) -> tuple[Array, Array, Array, Optional[Array]]:
  """`(scores, labels, where, weights)` for a ranking loss from rewards `[B, K, A]`.

  `"combined"`: `([B, K] combined scores, batch labels, batch where, None)`.
  `"per_attribute"`: `([A, B, K] per-head rewards, attribute labels moved to the front, where
  broadcast to `[A, B, K]`, weights `w_a` broadcast to `[A, B, K]`)`.
  """
  if labels not in LABEL_MODES:
    raise ValueError(f"reward-model labels must be one of {LABEL_MODES}, got {labels!r}.")
  where = jnp.asarray(batch["where"], bool)
  if labels == "combined":
    return combine_heads(rewards, head_weights), batch["labels"], where, None
  if "attribute_labels" not in batch:
    raise ValueError("labels='per_attribute' needs batch['attribute_labels'] [B, K, A]; the "
                     f"batch has keys {sorted(batch)}.")
  attribute_labels = jnp.asarray(batch["attribute_labels"], jnp.float32)
  if attribute_labels.shape != rewards.shape:
    raise ValueError(f"batch['attribute_labels'] has shape {attribute_labels.shape}, but the "
                     f"rewards [B, K, A] have shape {rewards.shape} (one label per head).")
  w = _head_weights(head_weights, rewards.shape[-1], "ranking_inputs")
  scores = jnp.moveaxis(rewards, -1, 0)
  weights = jnp.broadcast_to(w[:, None, None], scores.shape)
  return (scores, jnp.moveaxis(attribute_labels, -1, 0),
          jnp.broadcast_to(where, scores.shape), weights)


def training_metrics(rewards: Array, batch: Mapping[str, Array],
                     head_weights: Optional[Sequence[float]] = None) -> dict:
  """`(sum, count)` metrics of a batch: pairwise accuracy of the combined score on `labels`,
  the mean combined reward and, with `attribute_labels`, each head's pairwise accuracy."""
  rewards = jax.lax.stop_gradient(rewards)
  where = batch["where"]
  combined = combine_heads(rewards, head_weights)
  out = {
      "accuracy": metrics_lib.ranking_accuracy(combined, batch["labels"], where=where),
      "reward_mean": metrics_lib.sum_count(combined, where),
  }
  if "attribute_labels" in batch and rewards.shape[-1] > 1:
    for a in range(rewards.shape[-1]):
      out[f"accuracy/head_{a}"] = metrics_lib.ranking_accuracy(
          rewards[..., a], batch["attribute_labels"][..., a], where=where)
  return {name: tuple(value) for name, value in out.items()}


def _reward_loss(ranking_fn, score: ScoreFn, *, labels: str, head_weights, temperature: float,
                 tie_breaking: bool, name: str):
  if labels not in LABEL_MODES:
    raise ValueError(f"{name}: labels must be one of {LABEL_MODES}, got {labels!r}.")
  check_positive("temperature", temperature, where=name)

  def loss_fn(params, batch, loss_state, frozen, rng):
    del frozen
    rewards = score(params, batch)
    scores, targets, where, weights = ranking_inputs(
        rewards, batch, labels=labels, head_weights=head_weights)
    kwargs = {"key": rng} if tie_breaking else {}
    total, count = ranking_fn(scores / temperature, targets, where=where, weights=weights,
                              reduce_fn=losses.sum_and_count, **kwargs)
    return (total, count), (loss_state, training_metrics(rewards, batch, head_weights))

  return loss_fn


def bradley_terry_loss(score: ScoreFn, *, labels: str = "combined",
                       head_weights: Optional[Sequence[float]] = None,
                       temperature: float = 1.0):
  """Bradley–Terry reward-model loss `−logσ((r_i − r_j)/τ)` over the valid pairs of each list.

  `pairwise_logistic_loss` on `r/τ` (no margin), mean over all valid pairs of the batch (ties
  form no pair, docs/conventions.md#pairs); K = 2 lists are plain preference pairs.

  Args:
    score: `(params, batch) -> rewards [B, K, A]` (e.g. `score_fn(model_config)`).
    labels: "combined" or "per_attribute" (module docstring).
    head_weights: `w [A]`, ones by default.
    temperature: τ > 0 (1; some reward-model code uses 0.1).

  Returns:
    A loss for `alignment.training.step.make_train_step`.
  """
  return _reward_loss(ranking.pairwise_logistic_loss, score, labels=labels,
                      head_weights=head_weights, temperature=temperature, tie_breaking=False,
                      name="bradley_terry_loss")


def plackett_luce_loss(score: ScoreFn, *, labels: str = "combined",
                       head_weights: Optional[Sequence[float]] = None,
                       temperature: float = 1.0, random_ties: bool = True):
  """Plackett–Luce reward-model loss: ListMLE on `r/τ`, mean over lists.

  `ℓ = −Σ_r [s_{π(r)} − log Σ_{r' ≥ r} exp(s_{π(r')})]`, π the label order. With K = 2 it equals
  `bradley_terry_loss` (docs/conventions.md#reduction-to-dpo). `random_ties=True` orders tied
  labels at random with the step's PRNG key (recommended in training); False keeps the input
  order. Other arguments as in `bradley_terry_loss`.
  """
  return _reward_loss(ranking.listmle_loss, score, labels=labels, head_weights=head_weights,
                      temperature=temperature, tie_breaking=random_ties,
                      name="plackett_luce_loss")


LOSSES = {"bradley_terry": bradley_terry_loss, "plackett_luce": plackett_luce_loss}


def get_loss(name: str) -> Callable:
  """`bradley_terry_loss` or `plackett_luce_loss` by name; an unknown name raises a KeyError."""
  if name not in LOSSES:
    raise KeyError(f"Unknown reward-model loss {name!r}; known: {sorted(LOSSES)}.")
  return LOSSES[name]


# ------------------------------------------------------------------------------------------------
# Data: rated candidate lists as batch arrays.


def heads_and_weights(task, *, heads: str = "scalar", labels: str = "combined",
                      attribute: str = "") -> tuple[list[str], Optional[list[float]]]:
  """The attribute of each reward head and the head weights (None for one scalar head).

  `heads="scalar"`: one head, "reward" (the task's total reward) or `attribute` when set (a
  scalar reward model of that attribute alone); `heads="attributes"`: one head per attribute of
  `task.weights`, weighted by them. `labels="per_attribute"` needs one head per attribute.
  """
  if heads not in HEADS:
    raise ValueError(f"reward_model.heads must be one of {HEADS}, got {heads!r}.")
  if labels not in LABEL_MODES:
    raise ValueError(f"reward_model.labels must be one of {LABEL_MODES}, got {labels!r}.")
  attributes = list(task.weights)
  if attribute:
    if attribute not in task.weights:
      raise ValueError(f"data.attribute must be '' or one of {attributes}, got {attribute!r}.")
    if heads != "scalar":
      raise ValueError(f"data.attribute={attribute!r} trains one scalar reward model of that "
                       "attribute; set reward_model.heads='scalar'.")
    return [attribute], None
  if heads == "attributes":
    return attributes, [float(task.weights[a]) for a in attributes]
  if labels == "per_attribute" and len(attributes) > 1:
    raise ValueError(f"labels='per_attribute' needs one head per attribute {attributes}; set "
                     "reward_model.heads='attributes'.")
  return ["reward"], None


def preference_arrays(task, prompts: Sequence[str], responses: Sequence[Sequence[str]], labels,
                      heads: Sequence[str]) -> dict[str, np.ndarray]:
  """The batch arrays of N lists of K responses (`runs.fixed_batches`: `tokens [N, K, T]`, ...,
  `labels [N, K]`), plus `attribute_labels [N, K, A]`: each head's true value (head "reward":
  the true reward)."""
  k = len(responses[0])
  records = [{"prompt": p, "responses": list(rs), "scores": [float(x) for x in ls]}
             for p, rs, ls in zip(prompts, responses, labels)]
  arrays = runs.fixed_batches(records, runs.task_encoding(task), batch_size=len(records),
                              list_size=k)[0]
  flat_prompts = [p for p in prompts for _ in range(k)]
  flat_responses = [r for rs in responses for r in rs]
  values = task.attributes_batch(flat_prompts, flat_responses)
  values["reward"] = task.reward_batch(flat_prompts, flat_responses)
  arrays["attribute_labels"] = np.stack(
      [values[a].reshape(len(prompts), k) for a in heads], axis=-1).astype(np.float32)
  return arrays


def rated_lists(task, prompts: Sequence[str], responses: Sequence[Sequence[str]],
                rng: np.random.Generator, *, heads: Sequence[str], rater: str,
                rater_temperature: float, flip_rate: float = 0.0,
                attribute: str = "") -> tuple[dict[str, np.ndarray], dict]:
  """Candidate lists labelled by a simulated rater (`generation.rate_lists` over the true
  reward, or `attribute`'s true value): `(preference_arrays, stats)`, the stats being the
  number and size of the lists, what was rated, the mean true value and its spread within a
  list, and the number of lists whose labels are all tied."""
  rewards, labels = generation.rate_lists(
      task, prompts, responses, rng, rater=rater, temperature=rater_temperature,
      flip_rate=flip_rate, attribute=attribute)
  stats = {
      "num_lists": len(prompts),
      "k": len(responses[0]),
      "rater": rater,
      "rated": attribute or "reward",
      "mean_reward": float(rewards.mean()),
      "mean_reward_spread": float((rewards.max(-1) - rewards.min(-1)).mean()),
      "lists_all_tied": int(np.sum(np.all(labels == labels[:, :1], axis=-1))),
  }
  return preference_arrays(task, prompts, responses, labels, heads), stats


def array_batches(arrays: Mapping[str, np.ndarray], *, batch_size: int, seed: int,
                  shuffle: bool = True):
  """An endless checkpointable iterator of global batches of `batch_size` rows of `arrays`
  (all `[N, ...]`).

  A grain pipeline (`range(N) -> shuffle (anew each epoch) -> repeat -> batch -> gather`): its
  `get_state()`/`set_state()` resume exactly. Each of the P processes gathers its rows
  `[i·B/P, (i+1)·B/P)` of every global batch, so the trajectory does not depend on the number of
  hosts and every host's iterator state is the same. Used for batches with keys the record
  pipeline does not carry (`attribute_labels`).
  """
  sizes = {name: len(x) for name, x in arrays.items()}
  n = next(iter(sizes.values()), 0)
  if len(set(sizes.values())) != 1:
    raise ValueError(f"array_batches: arrays have different leading sizes {sizes}.")
  if batch_size < 1:
    raise ValueError(f"array_batches: batch_size must be >= 1, got {batch_size}.")
  if n == 0:
    raise ValueError("array_batches: no rows.")
  ds = grain.MapDataset.range(n)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  local = parallel.local_batch_size(batch_size)
  rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
  ds = ds.repeat().batch(batch_size).map(
      lambda idx: {k: v[idx[rows]] for k, v in arrays.items()})
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))


def predict_rewards(score: ScoreFn, params, arrays: Mapping[str, np.ndarray], *,
                    batch_size: int) -> np.ndarray:
  """Rewards `[N, K, A]` of all N rows of `arrays`, in jitted chunks of `batch_size` rows."""
  keys = ("tokens", "positions", "segment_ids", "completion_mask")
  n = len(arrays["tokens"])
  jitted = jax.jit(score)
  out = []
  for start in range(0, n, batch_size):
    idx = np.minimum(np.arange(start, start + batch_size), n - 1)  # static shape: pad by repeat
    out.append(np.asarray(jitted(params, {k: arrays[k][idx] for k in keys})))
  return np.concatenate(out)[:n]


def ranking_evaluation(rewards: np.ndarray, arrays: Mapping[str, np.ndarray], *,
                       head_weights: Optional[Sequence[float]] = None) -> dict[str, float]:
  """Held-out accuracies of rewards `[N, K, A]` against the labels of `arrays`.

  - `pairwise_accuracy`: `ranking_accuracy` of the combined score on `labels` (fraction of
    strictly ordered pairs ranked correctly; a tie in reward counts as correct);
  - `list_accuracy`: `ranking_accuracy_lists` (the whole list ranked exactly);
  - with `attribute_labels` and A > 1: `pairwise_accuracy/head_a`, `list_accuracy/head_a`.
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  where = jnp.asarray(arrays["where"], bool)
  combined = combine_heads(rewards, head_weights)
  labels = jnp.asarray(arrays["labels"])
  out = {
      "pairwise_accuracy": metrics_lib.ranking_accuracy(combined, labels, where=where),
      "list_accuracy": metrics_lib.ranking_accuracy_lists(combined, labels, where=where),
  }
  if "attribute_labels" in arrays and rewards.shape[-1] > 1:
    attribute_labels = jnp.asarray(arrays["attribute_labels"])
    for a in range(rewards.shape[-1]):
      r, y = rewards[..., a], attribute_labels[..., a]
      out[f"pairwise_accuracy/head_{a}"] = metrics_lib.ranking_accuracy(r, y, where=where)
      out[f"list_accuracy/head_{a}"] = metrics_lib.ranking_accuracy_lists(r, y, where=where)
  return {name: float(metrics_lib.mean(value)) for name, value in out.items()}


def load_reward_model(model_config, workdir: str) -> tuple[Any, Optional[list[float]]]:
  """`(params, head_weights)` of a reward model trained into `workdir`: the parameters of
  `workdir/params.msgpack` shaped by the heads listed in its summary `workdir/eval.json`."""
  with open(os.path.join(workdir, SUMMARY_FILE), encoding="utf-8") as f:
    summary = json.load(f)
  template = reward_model.init_reward_params(model_config, jax.random.key(0),
                                             num_heads=len(summary["heads"]))
  return setup.load_params(template, workdir), summary.get("head_weights")
