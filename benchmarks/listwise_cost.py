"""Cost of one listwise training step with prefix sharing against the same data as DPO pairs.

  python -m benchmarks.listwise_cost [--preset=small] [--prompts=2] [--k=8] \
      [--prompt_length=64] [--response_length=32] [--steps=3] [--objective=lipo_lambda]

The data: `prompts` prompts with K graded responses each (distinct grades, so every one of the
K·(K−1)/2 pairs is ordered: 28 pairs at K = 8). Two full training steps (forward, loss,
backward, AdamW; `benchmarks.dpo_step.train_step`) learn from exactly that information:

- listwise: `--objective` (LiPO-λ by default) on `[prompts, K]` log-probs from
  `alignment.models.prefix.prefix_shared_logps`: one row `[prompt | resp_1 | ... | resp_K]` per
  prompt, the prompt encoded once;
- pairwise: DPO on the K·(K−1)/2 pairs per prompt, stored as a pairwise dataset stores them
  (docs/interfaces.md#batches: `[prompts·28, 2, P + R]`, each row `[prompt, response]`), scored by
  `alignment.models.logprobs.sequence_logps`.

Reported per side: median step time, XLA FLOPs of the step (single LM-head tile program, see
`benchmarks.mfu.xla_flops`) and XLA temporary memory. `ratio = listwise / pairwise`.
"""

from __future__ import annotations

import argparse
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from alignment.models import config as config_lib
from alignment.models import prefix
from alignment.models import transformer
from benchmarks import dpo_step
from benchmarks import mfu


def make_data(vocab_size: int, *, prompts: int, k: int, prompt_length: int,
              response_length: int, seed: int = 0) -> tuple[dict, dict]:
  """`(listwise batch, pairwise batch)` over the same prompts, responses and grades.

  Listwise keys: `prompt_tokens [B, P]`, `prompt_lengths [B]`, `response_tokens [B, K, R]`,
  `response_mask`, `labels [B, K]` (a permutation of 0..K−1), `where`, `ref_logps [B, K]`.
  Pairwise: docs/interfaces.md#batches with `B·K(K−1)/2` pairs, slot 0 the better-graded response,
  and the same reference log-probs.
  """
  rng = np.random.default_rng(seed)
  b, p, r = prompts, prompt_length, response_length
  prompt_tokens = rng.integers(1, vocab_size, (b, p)).astype(np.int32)
  responses = rng.integers(1, vocab_size, (b, k, r)).astype(np.int32)
  labels = np.stack([rng.permutation(k) for _ in range(b)]).astype(np.float32)
  ref = (-r * np.log(vocab_size) + rng.normal(0.0, 3.0, (b, k))).astype(np.float32)
  listwise = {"prompt_tokens": prompt_tokens, "prompt_lengths": np.full((b,), p, np.int32),
              "response_tokens": responses, "response_mask": np.ones((b, k, r), bool),
              "labels": labels, "where": np.ones((b, k), bool), "ref_logps": ref}
  pairs = [(i, *sorted((j, l), key=lambda s: -labels[i, s]))
           for i in range(b) for j, l in itertools.combinations(range(k), 2)]
  index, better, worse = (np.array(x) for x in zip(*pairs))
  slots = np.stack([better, worse], axis=1)  # [n, 2]
  tokens = np.concatenate([np.broadcast_to(prompt_tokens[index][:, None], (len(pairs), 2, p)),
                           responses[index[:, None], slots]], axis=-1)
  completion = np.zeros(tokens.shape, bool)
  completion[..., p:] = True
  pairwise = {
      "tokens": tokens,
      "positions": np.broadcast_to(np.arange(p + r, dtype=np.int32), tokens.shape).copy(),
      "segment_ids": np.ones_like(tokens),
      "completion_mask": completion,
      "labels": np.broadcast_to(np.array([1.0, 0.0], np.float32), (len(pairs), 2)).copy(),
      "where": np.ones((len(pairs), 2), bool),
      "ref_logps": ref[index[:, None], slots],
  }
  return listwise, pairwise


def shared_logp_fn(config, *, single_tile: bool = False):
  """`(params, listwise batch) -> (logps [B, K], counts [B, K])` with the prompt encoded once."""
  tiles = dpo_step.SINGLE_TILE if single_tile else {}

  def fn(params, batch):
    return prefix.prefix_shared_logps(config, params, batch["prompt_tokens"],
                                      batch["prompt_lengths"], batch["response_tokens"],
                                      batch["response_mask"], **tiles)

  return fn


def _side(objective_name: str, logp_factory, params, batch, steps: int) -> dict:
  counting, state = dpo_step.train_step(objective_name, logp_factory(single_tile=True), params,
                                        donate=False)
  flops = mfu.xla_flops(counting, state, batch, None)
  # The step donates its state: give it its own copy of the shared parameters.
  step, state = dpo_step.train_step(objective_name, logp_factory(),
                                    jax.tree.map(jnp.copy, params))
  out = dpo_step.run_step(step, state, batch, steps)
  out["flops"] = flops
  out["tokens"] = int(np.prod(batch["tokens"].shape) if "tokens" in batch else
                      batch["prompt_tokens"].size + batch["response_tokens"].size)
  return out


def compare(*, preset: str = "small", prompts: int = 2, k: int = 8, prompt_length: int = 64,
            response_length: int = 32, steps: int = 3, objective: str = "lipo_lambda") -> dict:
  """`{"config", "pairs", "listwise": {...}, "pairwise": {...}}`; sides as `dpo_step.run_step`
  plus `flops` and `tokens` (tokens through the decoder per step)."""
  if k < 2:
    raise ValueError(f"listwise_cost: K must be >= 2 to form pairs, got {k}.")
  config = config_lib.get_config(preset, dtype=jnp.float32)
  params = jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))
  listwise, pairwise = make_data(config.vocab_size, prompts=prompts, k=k,
                                 prompt_length=prompt_length, response_length=response_length)
  listwise, pairwise = jax.device_put(listwise), jax.device_put(pairwise)
  return {
      "config": (f"{preset} f32, {prompts} prompts x K={k}, P={prompt_length} "
                 f"R={response_length}; {objective}+prefix sharing vs DPO on "
                 f"{k * (k - 1) // 2} pairs/prompt"),
      "pairs": k * (k - 1) // 2 * prompts,
      "listwise": _side(objective, lambda **kw: shared_logp_fn(config, **kw), params, listwise,
                        steps),
      "pairwise": _side("dpo", lambda **kw: dpo_step.logp_fn(config, **kw), params, pairwise,
                        steps),
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="small")
  parser.add_argument("--prompts", type=int, default=2)
  parser.add_argument("--k", type=int, default=8)
  parser.add_argument("--prompt_length", type=int, default=64)
  parser.add_argument("--response_length", type=int, default=32)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--objective", default="lipo_lambda")
  args = parser.parse_args(argv)
  r = compare(preset=args.preset, prompts=args.prompts, k=args.k,
              prompt_length=args.prompt_length, response_length=args.response_length,
              steps=args.steps, objective=args.objective)
  print(r["config"])
  for side in ("listwise", "pairwise"):
    s = r[side]
    print(f"  {side:8s} {s['step_s']:.3f} s/step  {s['flops'] / 1e9:8.1f} GFLOP  "
          f"{s['tokens']:6d} tokens  XLA temp {s['xla_temp_bytes'] / 2**20:.0f} MiB")


if __name__ == "__main__":
  main()
