"""Batched autoregressive sampling with a KV cache, for right-padded prompts of mixed lengths.

One jitted program: a prefill of the padded prompts `[B, P]` (segment id 1 on real tokens, 0 on
padding, so padding is never attended), then a `lax.while_loop` that writes token n of every row
to cache slot `P + n` at position `prompt_lengths[b] + n`. RoPE is applied before caching, so
rows of different prompt lengths decode in lock-step with correct positions and no left padding;
the cache also keeps each slot's position, so sliding windows (Mistral, Gemma 2) drop the keys
they drop in a full forward. Logits are `transformer.logits` (soft-capped where the model is).
The loop stops early once every row has emitted EOS. A logits hook (a bias `[V]` or `[B, V]`,
and/or a function of the logits and the step) changes what is sampled, e.g. the logit bias that
ZO-RankSGD optimises in `alignment.recipes.zo_lm`.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from alignment.models import transformer
from alignment.models.config import ModelConfig

Array = jax.Array
LogitsFn = Callable[[Array, Array], Array]


def filter_logits(logits: Array, *, top_k: Optional[int] = None,
                  top_p: Optional[float] = None) -> Array:
  """Sets logits outside the top-k and/or the top-p nucleus to -inf. `logits [B, V]`.

  top-k keeps the k largest (ties at the k-th value are all kept). top-p keeps the smallest set
  of most-likely tokens whose probability reaches `top_p` (*The Curious Case of Neural Text
  Degeneration*, Holtzman et al., 2020): token i (sorted descending) is kept iff the mass
  strictly before it is < top_p, so the most likely token is always kept.
  """
  if top_k is not None:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits >= kth, logits, -jnp.inf)
  if top_p is not None:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    kept = jnp.where(mass_before < top_p, sorted_logits, jnp.inf)
    threshold = jnp.min(kept, axis=-1, keepdims=True)
    logits = jnp.where(logits >= threshold, logits, -jnp.inf)
  return logits


def _check_arguments(prompt_tokens, prompt_lengths, max_new_tokens, temperature, top_k, top_p,
                     greedy, vocab_size, logit_bias):
  """Shape and range checks; value checks only where the values are concrete (not traced)."""
  if prompt_tokens.ndim != 2 or prompt_lengths.shape != prompt_tokens.shape[:1]:
    raise ValueError(f"sample: expected prompt_tokens [B, P] and prompt_lengths [B], got "
                     f"{prompt_tokens.shape} and {prompt_lengths.shape}.")
  if logit_bias is not None and logit_bias.shape not in ((vocab_size,),
                                                         (prompt_tokens.shape[0], vocab_size)):
    raise ValueError(f"sample: logit_bias must be [V={vocab_size}] or "
                     f"[B={prompt_tokens.shape[0]}, V], got {logit_bias.shape}.")
  if not isinstance(prompt_lengths, jax.core.Tracer):
    lengths = np.asarray(prompt_lengths)
    if lengths.size and (lengths.min() < 1 or lengths.max() > prompt_tokens.shape[1]):
      raise ValueError(f"sample: prompt_lengths must be in [1, P={prompt_tokens.shape[1]}], "
                       f"got {lengths.tolist()}.")
  if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
    raise ValueError(f"sample: max_new_tokens must be a positive int, got {max_new_tokens!r}.")
  if top_k is not None and not 1 <= top_k <= vocab_size:
    raise ValueError(f"sample: top_k must be in [1, {vocab_size}], got {top_k!r}.")
  if top_p is not None and not 0.0 < top_p <= 1.0:
    raise ValueError(f"sample: top_p must be in (0, 1], got {top_p!r}.")
  if not greedy and isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f"sample: temperature must be > 0 (use greedy=True for argmax), "
                     f"got {temperature!r}.")


def sample(config: ModelConfig, params, prompt_tokens: Array, prompt_lengths: Array, key: Array,
           *, max_new_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None,
           top_p: Optional[float] = None, eos_id: Optional[int] = None,
           greedy: bool = False, logit_bias: Optional[Array] = None,
           logits_fn: Optional[LogitsFn] = None) -> tuple[Array, Array, Array]:
  """Samples `max_new_tokens` continuations of each prompt.

  Each step draws `y_n ~ softmax(filter(h(z_n) / temperature))` (argmax of `h(z_n)` if
  `greedy`), where `z_n` `[B, V]` are the model's logits given the prompt and `y_<n`, `filter` is
  top-k then top-p, and the logits hook is `h(z_n) = logits_fn(z_n + logit_bias, n)` (identity
  without a hook). Step n uses the Gumbel noise of `fold_in(key, n)` whatever the hook, so two
  calls with the same key and different hooks share their sampling noise (common random numbers)
  and their samples differ only where the hook changes the argmax. The reported log-prob is that
  of the model itself, **not** of the sampling distribution: `logps[b, n] = log_softmax(z_n)[y_n]`
  without hook, at temperature 1, without top-k/top-p, so that `Σ_n logps[b, n]` equals
  re-scoring the sample with the model (what policy-gradient and preference objectives need).

  Args:
    config, params: the model.
    prompt_tokens: `[B, P]` int, right-padded.
    prompt_lengths: `[B]` int, real tokens per prompt (1 <= length <= P; checked unless traced).
    key: PRNG key (step n uses `fold_in(key, n)`).
    max_new_tokens: N, tokens generated per row (static).
    temperature: softmax temperature of sampling (> 0; ignored when `greedy`).
    top_k, top_p: optional filters (static).
    eos_id: a row stops after emitting it (static; None: never stop).
    greedy: argmax decoding (deterministic).
    logit_bias: optional `[V]` or `[B, V]` float added to the logits of every step (traced: a
      new bias needs no new compilation; `vmap` over biases samples several at once).
    logits_fn: optional jit-compatible `(logits [B, V], step int32 []) -> logits [B, V]`
      applied after the bias (static: pass the same function object to reuse the compiled
      program).

  Returns:
    `tokens [B, N]` int32 (0 after EOS), `logps [B, N]` float32 (0 after EOS), `lengths [B]`
    int32: tokens generated up to and including EOS (N if a row never emits EOS).
  """
  prompt_tokens = jnp.asarray(prompt_tokens, jnp.int32)
  prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
  if logit_bias is not None:
    logit_bias = jnp.asarray(logit_bias, jnp.float32)
  _check_arguments(prompt_tokens, prompt_lengths, max_new_tokens, temperature, top_k, top_p,
                   greedy, config.vocab_size, logit_bias)
  return _sample(config, params, prompt_tokens, prompt_lengths, key,
                 jnp.asarray(temperature, jnp.float32), logit_bias, max_new_tokens=max_new_tokens,
                 top_k=top_k, top_p=top_p, eos_id=eos_id, greedy=greedy, logits_fn=logits_fn)


@functools.partial(jax.jit, static_argnums=0,
                   static_argnames=("max_new_tokens", "top_k", "top_p", "eos_id", "greedy",
                                    "logits_fn"))
def _sample(config, params, prompt_tokens, prompt_lengths, key, temperature, logit_bias, *,
            max_new_tokens, top_k, top_p, eos_id, greedy, logits_fn):
  """The jitted body of `sample` (arguments already checked)."""
  b, p = prompt_tokens.shape
  n_total = max_new_tokens
  cache = transformer.init_cache(config, b, p + n_total)
  prompt_segments = (jnp.arange(p)[None, :] < prompt_lengths[:, None]).astype(jnp.int32)
  hidden, cache = transformer.apply(
      config, params, prompt_tokens, jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p)),
      prompt_segments, cache=cache)
  last = jnp.take_along_axis(hidden, (prompt_lengths - 1)[:, None, None], axis=1)[:, 0]
  step_logits = transformer.logits(config, params, last)  # [B, V] float32

  def hook(logits, n):
    if logit_bias is not None:
      logits = logits + logit_bias
    return logits if logits_fn is None else logits_fn(logits, n)

  def choose(logits, n):
    logits = hook(logits, n)
    if greedy:
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(jax.random.fold_in(key, n), filtered).astype(jnp.int32)

  def cond(state):
    n, _, _, done, *_ = state
    return (n < n_total) & ~jnp.all(done)

  def body(state):
    n, tokens, logps, done, lengths, logits, cache = state
    token = choose(logits, n)
    token_logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), token[:, None],
                                     axis=-1)[:, 0]
    tokens = tokens.at[:, n].set(jnp.where(done, 0, token))
    logps = logps.at[:, n].set(jnp.where(done, 0.0, token_logp))
    lengths = lengths + (~done).astype(jnp.int32)
    if eos_id is not None:
      done = done | (token == eos_id)
    hidden, cache = transformer.apply(
        config, params, token[:, None], (prompt_lengths + n)[:, None],
        jnp.ones((b, 1), jnp.int32), cache=cache)
    logits = transformer.logits(config, params, hidden[:, 0])
    return n + 1, tokens, logps, done, lengths, logits, cache

  state = (jnp.zeros((), jnp.int32), jnp.zeros((b, n_total), jnp.int32),
           jnp.zeros((b, n_total), jnp.float32), jnp.zeros((b,), bool),
           jnp.zeros((b,), jnp.int32), step_logits, cache)
  _, tokens, logps, _, lengths, _, _ = jax.lax.while_loop(cond, body, state)
  return tokens, logps, lengths
