"""Toy inputs for any registered objective, built from its registry spec and signature.

`example_inputs(name)` returns `(positional args, keyword inputs)` that `losses.get(name)`
accepts: log-probs of a chosen scale, sorted distinct labels, lengths, `where`, every declared
extra input (KTO's mismatched log-probs, TPO's token log-probs and hidden states, the group
objectives' completion masks, ...), required hyper-parameters and initial state. Used by the
cross-registry property tests and the objectives tour notebook; an objective whose extra input or
required hyper-parameter has no generator here raises a KeyError naming it.
"""

from __future__ import annotations

import inspect

import jax.numpy as jnp
import numpy as np

from alignment.losses import registry

B, T, D = 3, 5, 3  # lists per batch, tokens per response, hidden width

# Extra keyword inputs: name -> (kind, shape suffix after the batch axes [B, K]).
#   "list": like logps, [B, K];  "pair": one value per list, [B];  token-level: [B, K, T(, D)].
EXTRA_INPUTS = {
    "kl_logps": "list",
    "kl_ref_logps": "list",
    "rationale_logps": "pair",
    "target_logps": "pair",
    "token_logps": "tokens",
    "token_ref_logps": "tokens",
    "step_ids": "step_ids",
    "hidden_states": "hidden",
    # Group objectives: a completion mask makes logps/ref_logps token-level [B, K, T].
    "mask": "completion_mask",
    "old_logps": "like_logps",
    "online_logps": "list",
    "online_ref_logps": "list",
    "preference_scores": "pair_table",
    "prev_win_probs": "probs",
}
REQUIRED_HYPER_PARAMETERS = {"delta": 1.0, "reg_weight": 0.1, "beta": 0.1, "kl_weight": 0.5}
INPUT_NAMES = ("logps", "ref_logps", "labels", "lengths", "where", "weights", "state", "mse")


def _list_size(spec):
  return 4 if spec.family == "listwise" else 2


def _labels(spec, k):
  # Sorted, distinct, in [0, 1]: binary [1, 0] for K = 2 (pairs, unpaired feedback), and valid
  # for every listwise contract (PRO/KnowPAT sorted, TPO best first, pointwise in [0, 1]).
  return jnp.broadcast_to(jnp.linspace(1.0, 0.0, k), (B, k))


def example_inputs(name: str, *, seed: int = 0, scale: float = 20.0, tie: bool = False):
  """`(args, kwargs)` for `losses.get(name)(*args, **kwargs)`: `[3, K]` toy inputs.

  Args:
    name: a registered objective.
    seed: numpy seed of the random log-probs.
    scale: |log-probs| lie in [scale/2, scale].
    tie: policy = reference and all responses equal (every margin 0).
  """
  spec = registry.spec(name)
  params = inspect.signature(spec.fn).parameters
  k = _list_size(spec)
  rng = np.random.default_rng(seed)
  draw = lambda *shape: jnp.asarray(-(0.5 + 0.5 * rng.random((B, k) + shape)) * scale,
                                    jnp.float32)
  token_level = "mask" in spec.extra_inputs
  draw_logps = (lambda: draw(T) / T) if token_level else draw
  logps, ref = draw_logps(), draw_logps()
  if tie:  # policy = reference and chosen = rejected: every margin is 0
    logps = ref = jnp.full((B, k), -scale / 2, jnp.float32)
  if next(iter(params)) == "mse":
    logps = -logps
  kwargs = {"where": jnp.ones((B, k), bool)}
  if "lengths" in params:
    kwargs["lengths"] = jnp.full((B, k), 7) if tie else jnp.asarray(rng.integers(1, 12, (B, k)))
  for extra in spec.extra_inputs:
    if extra not in EXTRA_INPUTS:
      raise KeyError(f"example_inputs: no generator for {name}'s extra input {extra!r}; add "
                     "one to EXTRA_INPUTS.")
    kind = EXTRA_INPUTS[extra]
    if kind == "list":
      kwargs[extra] = draw()
    elif kind == "pair":
      kwargs[extra] = draw()[:, 0]
    elif kind == "tokens":
      kwargs[extra] = draw(T) / T
    elif kind == "step_ids":
      kwargs[extra] = jnp.broadcast_to(jnp.array([0, 1, 1, 2, 2]), (B, k, T))
    elif kind == "hidden":
      kwargs[extra] = jnp.asarray(rng.normal(size=(B, k, T, D)), jnp.float32)
    elif kind == "completion_mask":  # ragged completions: the last token of list item 0 is pad
      kwargs[extra] = jnp.ones((B, k, T), bool).at[:, 0, -1].set(False)
    elif kind == "like_logps":
      kwargs[extra] = draw_logps()
    elif kind == "pair_table":
      kwargs[extra] = jnp.asarray(rng.normal(size=(B, k, k)), jnp.float32)
    elif kind == "probs":
      kwargs[extra] = jnp.asarray(rng.random((B, k)), jnp.float32)
  for param in params.values():
    if (param.kind == param.KEYWORD_ONLY and param.default is param.empty
        and param.name not in INPUT_NAMES and param.name not in EXTRA_INPUTS):
      if param.name not in REQUIRED_HYPER_PARAMETERS:
        raise KeyError(f"example_inputs: no value for {name}'s required hyper-parameter "
                       f"{param.name!r}; add one to REQUIRED_HYPER_PARAMETERS.")
      kwargs[param.name] = REQUIRED_HYPER_PARAMETERS[param.name]
  if spec.stateful:
    kwargs["state"] = spec.init_state()
  ref_logps = ref if spec.needs_reference else None
  labels = _labels(spec, k)
  if list(params)[2] == "rewards_per_func":  # F = 2 reward heads per completion
    labels = jnp.stack([labels, labels[:, ::-1]], axis=-1)
  return (logps, ref_logps, labels), kwargs
