"""The train state and the jitted train-step factory.

`make_train_step` turns a loss

    loss_fn(params, micro_batch, loss_state, frozen, rng) -> ((loss_sum, count), (loss_state, aux))

(`aux` maps metric names to `(sum, count)` pairs) into a pure, jitted step

    step(state, batch, frozen) -> (state, metrics)

- gradient accumulation over `accum_steps` micro-batches is exact: the gradients of the loss
  *sums* are added and divided once by the total *count*, so 4 micro-batches give the same
  update as one batch of 4x the size (for objectives that are means over examples or pairs;
  `docs/conventions.md#reductions`);
- the PRNG key in `TrainState.rng` is split once per step and once more per micro-batch;
- an optional global-norm clip lives in the optimiser (`alignment.training.optim`);
- a non-finite loss or gradient never reaches the parameters: the update is skipped and counted
  in `TrainState.nonfinite` (`on_nonfinite="skip"`); with `"error"` it is skipped too and the
  loop (`alignment.training.loop`) then raises, naming the last good checkpoint;
- objective state (e.g. BCO's running moments) is carried in `TrainState.loss_state`;
- the step is jitted once, with the state donated and explicit shardings when a mesh is given.

`frozen` holds arrays the step reads but never updates (reference parameters, a LoRA base); it
is an argument of the jitted function (not a closed-over constant) and is not donated.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

Metrics = dict[str, jax.Array]
LossFn = Callable[..., tuple[tuple[jax.Array, jax.Array], tuple[Any, dict]]]


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs: step, params, optimiser state, PRNG key, objective state.

  Attributes:
    step: int32 scalar, number of steps taken (skipped non-finite steps included).
    params: the trainable parameters (LoRA adapters when LoRA is on).
    opt_state: optax state.
    rng: PRNG key for the step (split once per step).
    loss_state: objective state pytree (`()` for stateless objectives).
    nonfinite: int32 scalar, number of updates skipped because of a non-finite loss or gradient.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  loss_state: Any
  nonfinite: jax.Array


def init_train_state(params, optimizer: optax.GradientTransformation, rng, loss_state=()):
  """A fresh `TrainState` at step 0."""
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=optimizer.init(params),
      rng=rng,
      loss_state=loss_state,
      nonfinite=jnp.zeros((), jnp.int32),
  )


def train_state_sharding(
    state: TrainState, params_sharding, optimizer: optax.GradientTransformation, mesh
) -> TrainState:
  """Shardings of a `TrainState`: params (and optimiser moments shaped like them) as given,
  everything else (step, PRNG key, objective state, scalar optimiser counters) replicated."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  opt_sharding = optax.tree_map_params(
      optimizer, lambda _, sharding: sharding, state.opt_state, params_sharding,
      transform_non_params=lambda _: replicated,
  )
  return TrainState(
      step=replicated,
      params=params_sharding,
      opt_state=opt_sharding,
      rng=replicated,
      loss_state=jax.tree.map(lambda _: replicated, state.loss_state),
      nonfinite=replicated,
  )


def split_microbatches(batch: dict, accum_steps: int) -> dict:
  """Reshapes every `[B, ...]` leaf to `[accum_steps, B // accum_steps, ...]`."""

  def split(x):
    if x.shape[0] % accum_steps:
      raise ValueError(
          f"Batch size {x.shape[0]} is not divisible by accum_steps={accum_steps}."
      )
    return x.reshape(accum_steps, x.shape[0] // accum_steps, *x.shape[1:])

  return jax.tree.map(split, batch)


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _select(pred, new, old):
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    accum_steps: int = 1,
    on_nonfinite: str = "skip",
    donate: bool = True,
    state_sharding=None,
    batch_sharding=None,
    frozen_sharding=None,
) -> Callable[[TrainState, dict, Any], tuple[TrainState, Metrics]]:
  """Builds the jitted step `(state, batch, frozen) -> (state, metrics)`.

  Args:
    loss_fn: `(params, micro_batch, loss_state, frozen, rng) -> ((loss_sum, count),
      (new_loss_state, aux))`, where `aux` maps metric names to `(sum, count)` pairs.
    optimizer: the optax transformation (clipping included).
    accum_steps: micro-batches per step; the batch's leading axis must divide by it.
    on_nonfinite: "skip" (skip the update and count it) or "error" (skip it too; the loop then
      stops with a clear error after keeping the last good checkpoint).
    donate: donate the input state buffers.
    state_sharding / batch_sharding / frozen_sharding: explicit shardings (with a mesh), or None.

  Returns:
    The jitted step. `metrics` holds `loss`, `grad_norm`, `count`, `finite` and the means of the
    loss's auxiliary metrics, all reduced exactly over the micro-batches.
  """
  if on_nonfinite not in ("skip", "error"):
    raise ValueError(f"on_nonfinite must be 'skip' or 'error', got {on_nonfinite!r}.")
  if accum_steps < 1:
    raise ValueError(f"accum_steps must be >= 1, got {accum_steps}.")

  def loss_and_grad(params, micro, loss_state, frozen, rng):
    def objective(p):
      (total, count), (new_loss_state, aux) = loss_fn(p, micro, loss_state, frozen, rng)
      return total, (count, new_loss_state, aux)

    return jax.value_and_grad(objective, has_aux=True)(params)

  def step(state: TrainState, batch: dict, frozen) -> tuple[TrainState, Metrics]:
    rng, step_rng = jax.random.split(state.rng)
    micro_batches = split_microbatches(batch, accum_steps)
    micro_rngs = jax.random.split(step_rng, accum_steps)

    def accumulate(carry, inputs):
      grads, total, count, loss_state, aux_sums = carry
      micro, micro_rng = inputs
      (m_total, (m_count, loss_state, aux)), m_grads = loss_and_grad(
          state.params, micro, loss_state, frozen, micro_rng
      )
      grads = jax.tree.map(jnp.add, grads, m_grads)
      aux_sums = jax.tree.map(jnp.add, aux_sums, aux)
      return (grads, total + m_total, count + m_count, loss_state, aux_sums), None

    # One abstract evaluation gives the structure of the auxiliary metrics.
    first = jax.tree.map(lambda x: x[0], micro_batches)
    _, (_, aux_shape) = jax.eval_shape(
        lambda: loss_fn(state.params, first, state.loss_state, frozen, step_rng)
    )
    zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), tree)
    carry0 = (
        jax.tree.map(jnp.zeros_like, state.params),
        jnp.zeros((), jnp.float32),
        jnp.zeros((), jnp.float32),
        state.loss_state,
        zeros(aux_shape),
    )
    (grad_sum, total, count, loss_state, aux_sums), _ = jax.lax.scan(
        accumulate, carry0, (micro_batches, micro_rngs)
    )
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grad_sum)
    loss = total / denom
    finite = jnp.isfinite(loss) & _all_finite(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(
        step=state.step + 1,
        params=_select(finite, params, state.params),
        opt_state=_select(finite, opt_state, state.opt_state),
        rng=rng,
        loss_state=_select(finite, loss_state, state.loss_state),
        nonfinite=state.nonfinite + (~finite).astype(jnp.int32),
    )
    metrics = {
        "loss": loss,
        "grad_norm": optax.global_norm(grads),
        "count": count,
        "finite": finite.astype(jnp.float32),
    }
    for name, (s, c) in aux_sums.items():
      metrics[name] = s / jnp.maximum(c, 1.0)
    return new_state, metrics

  jit_kwargs = {"donate_argnums": (0,) if donate else ()}
  if state_sharding is not None:
    jit_kwargs["in_shardings"] = (state_sharding, batch_sharding, frozen_sharding)
    jit_kwargs["out_shardings"] = (state_sharding, None)
  return jax.jit(step, **jit_kwargs)
