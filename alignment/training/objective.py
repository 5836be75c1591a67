"""Losses of the training binaries: SFT and any registered preference objective.

Both are built over a *log-prob function* `logp_fn(params, batch) -> (logps [B, K], counts
[B, K])` (summed completion log-probs and token counts, computed without `[B, T, V]` float32
logits), so they never see a model directly, and both return `((sum, count), (state, aux))` as
`alignment.training.step.make_train_step` expects.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from alignment import losses
from alignment import metrics as metrics_lib
from alignment.data import batching

LogpFn = Callable[[Any, dict], tuple[jax.Array, jax.Array]]

# Extra inputs the trainer can supply, by name, from a batch.
_BATCH_INPUTS = {"lengths": "response_lengths"}
# Extra inputs computed in the step from KTO's mismatched pairs (`batching.mismatched_batch`):
# the policy's and the reference's log-probs of prompt i with the responses of row i − 1.
_MISMATCHED_INPUTS = ("kl_logps", "kl_ref_logps")

REFERENCE_MODES = ("cache", "forward", "lora", "none")


def _identity_policy(params, frozen):
  del frozen
  return params


def sft_loss(logp_fn: LogpFn) -> Callable:
  """Token-mean negative log-likelihood of the completion tokens, as `(Σ −log p, #tokens)`."""

  def loss_fn(params, batch, loss_state, frozen, rng):
    del frozen, rng
    logps, counts = logp_fn(params, batch)
    where = batch["where"]
    total = -jnp.sum(jnp.where(where, logps, 0.0))
    count = jnp.sum(jnp.where(where, counts, 0)).astype(jnp.float32)
    aux = {"nll": (total, count)}
    return (total, count), (loss_state, aux)

  return loss_fn


def _needs_mismatched(spec: losses.ObjectiveSpec) -> bool:
  return any(x in _MISMATCHED_INPUTS for x in spec.extra_inputs)


def heldout_metrics(loss_fn, batches, *, loss_state=()) -> Callable[[Any, Any], dict]:
  """`(params, frozen) -> {"loss": ..., metric: ...}`: the loss and the auxiliary metrics of
  `loss_fn` over fixed held-out `batches`, each the exact mean `Σ sums / Σ counts` over all of
  them (padding rows with `where` False count in none). `loss_state` is the objective state the
  evaluation uses (e.g. BCO's initial moments)."""
  step = jax.jit(lambda params, batch, frozen: loss_fn(
      params, batch, loss_state, frozen, jax.random.key(0)))

  def evaluate(params, frozen) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for batch in batches:
      (total, count), (_, aux) = step(params, batch, frozen)
      for name, (s, c) in {"loss": (total, count), **aux}.items():
        acc = sums.setdefault(name, [0.0, 0.0])
        acc[0] += float(s)
        acc[1] += float(c)
    return {name: s / c for name, (s, c) in sums.items() if c > 0}

  return evaluate


def check_objective_supported(name: str, reference: str) -> losses.ObjectiveSpec:
  """Validates an objective name and reference mode; raises a clear error otherwise."""
  if reference not in REFERENCE_MODES:
    raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {reference!r}.")
  spec = losses.spec(name)  # unknown names raise a KeyError listing the known ones
  supplied = (*_BATCH_INPUTS, *_MISMATCHED_INPUTS)
  missing = [x for x in spec.extra_inputs if x not in supplied]
  if missing:
    raise ValueError(
        f"Objective {name!r} needs inputs {missing} that the preference trainer does not build "
        f"from a batch (it supplies {sorted(supplied)}); use the function directly."
    )
  if reference == "cache" and _needs_mismatched(spec):
    raise ValueError(
        f"Objective {name!r} needs reference log-probs of mismatched pairs, which change with "
        "every batch (prompt i with the response of row i − 1), so they cannot be cached; set "
        "train.reference='forward' (or 'lora')."
    )
  if spec.needs_reference and reference == "none":
    raise ValueError(f"Objective {name!r} needs a reference model; set reference != 'none'.")
  return spec


def preference_loss(
    name: str,
    logp_fn: LogpFn,
    *,
    reference: str = "cache",
    hyper_parameters: Mapping[str, Any] | None = None,
    ref_logp_fn: LogpFn | None = None,
    policy_params: Callable[[Any, Any], Any] = _identity_policy,
    pad_id: int = 0,
) -> Callable:
  """The loss of registered objective `name` over a batch (docs/interfaces.md#batches).

  Args:
    name: registry name (`alignment.losses.names()`).
    logp_fn: policy log-probs `(params, batch) -> (logps [B, K], counts [B, K])`.
    reference: where reference log-probs come from: "cache" (`batch["ref_logps"]`, precomputed),
      "forward" (`ref_logp_fn(frozen, batch)` inside the step, frozen = reference params),
      "lora" (the same with frozen = the LoRA base: the adapters switched off), or "none"
      (reference-free objectives).
    hyper_parameters: keyword hyper-parameters of the objective (beta, ...).
    ref_logp_fn: for "forward"/"lora": `(frozen, batch) -> (logps, counts)`.
    policy_params: `(trainable, frozen) -> model parameters`; the identity by default, and
      `lambda adapters, base: lora.merge(base, adapters)` with LoRA.
    pad_id: the tokenizer's padding id (for KTO's mismatched pairs).

  KTO (`kl_logps`, `kl_ref_logps`): the step builds the mismatched pairs from the batch it gets
  (`batching.mismatched_batch`: the global batch, or each micro-batch with `accum_steps > 1`)
  and runs the policy (stop-gradient) and the reference on them; reference "cache" is refused.
  Stateful objectives (BCO) take `loss_state` and return the updated state, which the train
  state carries and checkpoints.
  """
  spec = check_objective_supported(name, reference)
  fn = spec.fn
  hyper = dict(hyper_parameters or {})
  beta = float(hyper.get("beta", 0.1))

  def reference_logps(batch, frozen):
    if not spec.needs_reference:  # reference-free: whatever the configured mode
      return None
    if reference == "cache":
      if "ref_logps" not in batch:
        raise ValueError(
            f"reference='cache' but the batch has no 'ref_logps' (objective {name!r}); "
            "precompute them with alignment.training.reference.cached_reference_logps."
        )
      return batch["ref_logps"]
    return jax.lax.stop_gradient(ref_logp_fn(frozen, batch)[0])

  def mismatched_logps(model_params, batch, frozen):
    kl_batch = batching.mismatched_batch(batch, pad_id=pad_id)
    return {"kl_logps": jax.lax.stop_gradient(logp_fn(model_params, kl_batch)[0]),
            "kl_ref_logps": reference_logps(kl_batch, frozen)}

  def loss_fn(params, batch, loss_state, frozen, rng):
    del rng
    model_params = policy_params(params, frozen)
    logps, _ = logp_fn(model_params, batch)
    ref = reference_logps(batch, frozen)
    kwargs = dict(hyper)
    for input_name in ("lengths", *spec.extra_inputs):
      if input_name in _BATCH_INPUTS and (input_name != "lengths" or spec.needs_lengths):
        kwargs[input_name] = batch[_BATCH_INPUTS[input_name]]
    if _needs_mismatched(spec):
      kwargs.update(mismatched_logps(model_params, batch, frozen))
    if spec.stateful:
      kwargs["state"] = loss_state
    out = fn(
        logps, ref, batch["labels"], where=batch["where"], reduce_fn=losses.sum_and_count,
        **kwargs,
    )
    if spec.stateful:
      out, loss_state = out
    total, count = out if isinstance(out, tuple) else (out, jnp.ones((), jnp.float32))
    aux = metrics_lib.reward_metrics(
        jax.lax.stop_gradient(logps), ref, batch["labels"], beta=beta, where=batch["where"]
    )
    if _needs_mismatched(spec):  # KTO's reference point z0, logged as TRL's "kl"
      z0 = losses.pointwise.kto_reference_point(
          kwargs["kl_logps"], kwargs["kl_ref_logps"], where=batch["where"])
      aux["kl"] = metrics_lib.SumCount(z0, jnp.ones((), jnp.float32))
    return (total, count), (loss_state, aux)

  return loss_fn
