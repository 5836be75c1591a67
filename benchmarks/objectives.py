"""Forward+backward time of listwise objectives against their Rax equivalents (CPU, jitted).

Usage: `python -m benchmarks.objectives [--batch 4096] [--list-size 8] [--repeats 50]
[--json PATH]`. Each row times `jax.jit(jax.value_and_grad(loss))` with respect to the policy
log-probs on `[batch, K]` inputs, after a warm-up call, as the median of `--repeats` calls
(alternating with Rax's, so that load on a shared machine hits both alike); Rax gets the same
scores `s = β·(logps − ref_logps)` and the losses are checked to agree before timing:

| ours | Rax |
|---|---|
| `dpo` (K = 2: one pair per list, on `[batch·K/2, 2]`) | `pairwise_logistic_loss` |
| `lipo_lambda(rax_scaled=True)` | `pairwise_logistic_loss(lambdaweight_fn=dcg_lambdaweight)` |
| `lipo_listmle` | `listmle_loss` |
| `lipo_softmax` | `softmax_loss(label_fn=normalize_probabilities)` |

`ratio = ours / rax` (< 1: faster than Rax). Rax is an optional dependency (`bench` extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from alignment import losses

BETA = 0.1


def _time_pair(fn_a, fn_b, *args, repeats: int) -> tuple[float, float]:
  """Median wall times (seconds) of `fn_a(*args)` and `fn_b(*args)` after a warm-up call each.

  Calls alternate between the two functions, so that load changes on a shared machine hit
  both sides alike.
  """
  jax.block_until_ready(fn_a(*args))
  jax.block_until_ready(fn_b(*args))
  times_a, times_b = [], []
  for _ in range(repeats):
    for fn, times in ((fn_a, times_a), (fn_b, times_b)):
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - start)
  return statistics.median(times_a), statistics.median(times_b)


def _inputs(batch: int, k: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  logps = jnp.asarray(-rng.random((batch, k)) * 50.0, jnp.float32)
  ref = jnp.asarray(-rng.random((batch, k)) * 50.0, jnp.float32)
  labels = jnp.asarray(rng.integers(0, 5, (batch, k)), jnp.float32)
  return logps, ref, labels


def _ours(name, **options):
  fn = losses.get(name)
  return jax.jit(jax.value_and_grad(lambda lp, ref, y: fn(lp, ref, y, beta=BETA, **options)))


def _rax(loss_fn, **options):
  def f(lp, ref, y):
    return loss_fn(BETA * (lp - jax.lax.stop_gradient(ref)), y, **options)
  return jax.jit(jax.value_and_grad(f))


def rows(batch: int, k: int, repeats: int) -> list[dict]:
  """Timing rows `{objective, rax, shape, ours_ms, rax_ms, ratio}`."""
  import rax  # pylint: disable=g-import-not-at-top
  logps, ref, labels = _inputs(batch, k)
  pair_inputs = (logps.reshape(-1, 2), ref.reshape(-1, 2),
                 jnp.broadcast_to(jnp.array([1.0, 0.0]), (batch * k // 2, 2)))
  cases = [
      ("dpo", _ours("dpo"), "pairwise_logistic_loss", _rax(rax.pairwise_logistic_loss),
       pair_inputs),
      ("lipo_lambda", _ours("lipo_lambda", rax_scaled=True),
       "pairwise_logistic_loss+dcg_lambdaweight",
       _rax(rax.pairwise_logistic_loss, lambdaweight_fn=rax.dcg_lambdaweight),
       (logps, ref, labels)),
      ("lipo_listmle", _ours("lipo_listmle"), "listmle_loss", _rax(rax.listmle_loss),
       (logps, ref, labels)),
      ("lipo_softmax", _ours("lipo_softmax"), "softmax_loss(normalize_probabilities)",
       _rax(rax.softmax_loss, label_fn=rax.utils.normalize_probabilities),
       (logps, ref, labels)),
  ]
  out = []
  for name, ours, rax_name, theirs, args in cases:
    ours_value = float(ours(*args)[0])
    rax_value = float(theirs(*args)[0])
    if not np.isclose(ours_value, rax_value, rtol=1e-4):
      raise AssertionError(f"{name}: loss {ours_value} differs from rax {rax_value}")
    ours_s, rax_s = _time_pair(ours, theirs, *args, repeats=repeats)
    out.append(dict(objective=name, rax=rax_name, shape=list(args[0].shape),
                    ours_ms=ours_s * 1e3, rax_ms=rax_s * 1e3, ratio=ours_s / rax_s))
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4096)
  parser.add_argument("--list-size", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=50)
  parser.add_argument("--json", default=None, help="write the rows to this JSON file")
  args = parser.parse_args(argv)
  table = rows(args.batch, args.list_size, args.repeats)
  print(f"forward+backward, jit, {jax.devices()[0].platform}, median of {args.repeats}")
  print(f"{'objective':<14} {'shape':<12} {'ours ms':>9} {'rax ms':>9} {'ratio':>6}  rax")
  for r in table:
    print(f"{r['objective']:<14} {str(r['shape']):<12} {r['ours_ms']:9.3f} {r['rax_ms']:9.3f} "
          f"{r['ratio']:6.2f}  {r['rax']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(table, f, indent=2)


if __name__ == "__main__":
  main()
