"""Forward+backward time of pairwise objectives against TRL's formulas written in PyTorch (CPU).

Usage: `python -m benchmarks.torch_objectives [--batch 4096] [--list-size 8] [--repeats 50]
[--threads 2]`. The `[batch, K]` log-probs of `benchmarks.objectives` are cut into
`batch·K/2` pairs (`[batch·K/2, 2]`, slot 0 chosen). Ours is
`jax.jit(jax.value_and_grad(loss))` w.r.t. the policy log-probs; the peer is the loss of TRL's
`DPOTrainer.dpo_loss` for the matching `loss_type`, transcribed below into plain PyTorch (TRL
itself is not needed) and differentiated with `torch.autograd.grad` w.r.t. the chosen and
rejected policy log-probs. Both sides must agree on the loss value before they are timed; the
median of `--repeats` alternating calls is reported (`benchmarks.objectives._time_pair`).

| ours | TRL `loss_type` |
|---|---|
| `dpo` | `sigmoid` |
| `cdpo(label_smoothing=0.1)` | `sigmoid` with `label_smoothing=0.1` |
| `hinge` | `hinge` |
| `ipo` (per-token mean log-ratios) | `ipo` (log-probs divided by completion lengths) |
| `exo_pair` | `exo_pair` |
| `nca_pair` | `nca_pair` |
| `sppo_hard` | `sppo_hard` |
| `apo_zero` | `apo_zero` |

`ratio = ours / torch` (< 1: faster than the PyTorch version). torch is an optional dependency
(`bench` extra).
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np

from alignment import losses
from benchmarks import objectives as objectives_bench

BETA = objectives_bench.BETA
LABEL_SMOOTHING = 0.1  # for the cDPO row
EXO_EPSILON = 1e-3  # TRL: max(label_smoothing, 1e-3)

# (our registry name, our keyword options, TRL loss_type, TRL label_smoothing).
CASES = (
    ("dpo", {}, "sigmoid", 0.0),
    ("cdpo", {"label_smoothing": LABEL_SMOOTHING}, "sigmoid", LABEL_SMOOTHING),
    ("hinge", {}, "hinge", 0.0),
    ("ipo", {}, "ipo", 0.0),
    ("exo_pair", {"label_smoothing": EXO_EPSILON}, "exo_pair", 0.0),
    ("nca_pair", {}, "nca_pair", 0.0),
    ("sppo_hard", {}, "sppo_hard", 0.0),
    ("apo_zero", {}, "apo_zero", 0.0),
)


def trl_loss(loss_type: str, chosen, rejected, ref_chosen, ref_rejected, *, beta: float,
             label_smoothing: float = 0.0, chosen_lengths=None, rejected_lengths=None):
  """TRL's `DPOTrainer.dpo_loss` for `loss_type`, mean over pairs (torch tensors `[N]`).

  `logits = (π_w − π_l) − (ref_w − ref_l)`; for `ipo` all four log-probs are first divided by
  the completion lengths, as TRL does in `concatenated_forward`.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  if loss_type == "ipo":
    chosen, ref_chosen = chosen / chosen_lengths, ref_chosen / chosen_lengths
    rejected, ref_rejected = rejected / rejected_lengths, ref_rejected / rejected_lengths
  logits = (chosen - rejected) - (ref_chosen - ref_rejected)
  chosen_logratios, rejected_logratios = chosen - ref_chosen, rejected - ref_rejected
  if loss_type == "sigmoid":
    out = (-F.logsigmoid(beta * logits) * (1 - label_smoothing)
           - F.logsigmoid(-beta * logits) * label_smoothing)
  elif loss_type == "hinge":
    out = torch.relu(1 - beta * logits)
  elif loss_type == "ipo":
    out = (logits - 1 / (2 * beta)) ** 2
  elif loss_type == "exo_pair":
    eps = max(label_smoothing, EXO_EPSILON)
    out = (torch.sigmoid(beta * logits) * (F.logsigmoid(beta * logits) - math.log1p(-eps))
           + torch.sigmoid(-beta * logits) * (F.logsigmoid(-beta * logits) - math.log(eps)))
  elif loss_type == "nca_pair":
    chosen_rewards, rejected_rewards = beta * chosen_logratios, beta * rejected_logratios
    out = (-F.logsigmoid(chosen_rewards) - 0.5 * F.logsigmoid(-chosen_rewards)
           - 0.5 * F.logsigmoid(-rejected_rewards))
  elif loss_type == "sppo_hard":
    out = (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2
  elif loss_type == "apo_zero":
    out = (1 - torch.sigmoid(beta * chosen_logratios)) + torch.sigmoid(beta * rejected_logratios)
  else:
    raise ValueError(f"trl_loss: unknown loss_type {loss_type!r}.")
  return out.mean()


def _torch_value_and_grad(loss_type: str, label_smoothing: float):
  """`(chosen, rejected, ref_chosen, ref_rejected, lengths_w, lengths_l) -> (loss, grads)`."""
  import torch  # pylint: disable=g-import-not-at-top

  def fn(chosen, rejected, ref_chosen, ref_rejected, chosen_lengths, rejected_lengths):
    loss = trl_loss(loss_type, chosen, rejected, ref_chosen, ref_rejected, beta=BETA,
                    label_smoothing=label_smoothing, chosen_lengths=chosen_lengths,
                    rejected_lengths=rejected_lengths)
    return loss.detach(), torch.autograd.grad(loss, (chosen, rejected))

  return fn


def _ours_value_and_grad(name: str, options: dict):
  fn = losses.get(name)
  needs_lengths = losses.spec(name).needs_lengths

  def loss(lp, ref, y, lengths):
    extra = {"lengths": lengths} if needs_lengths else {}
    return fn(lp, ref, y, beta=BETA, **extra, **options)

  return jax.jit(jax.value_and_grad(loss))


def rows(batch: int, k: int, repeats: int, *, threads: int = 2) -> list[dict]:
  """Timing rows `{objective, torch, shape, ours_ms, torch_ms, ratio}` on `batch·k/2` pairs."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  if batch * k % 2:
    raise ValueError(f"batch·K must be even to form pairs, got batch={batch}, K={k}.")
  logps, ref, _ = objectives_bench._inputs(batch, k)  # pylint: disable=protected-access
  lengths = np.random.default_rng(1).integers(1, 64, logps.shape).astype(np.float32)
  pairs = [jnp.reshape(x, (-1, 2)) for x in (logps, ref, lengths)]
  labels = jnp.broadcast_to(jnp.array([1.0, 0.0]), pairs[0].shape)
  ours_args = (pairs[0], pairs[1], labels, pairs[2])
  columns = [np.asarray(x) for x in pairs]
  policy = [torch.tensor(columns[0][:, j], requires_grad=True) for j in (0, 1)]
  torch_args = (*policy, *(torch.tensor(columns[i][:, j]) for i in (1, 2) for j in (0, 1)))
  out = []
  for name, options, loss_type, smoothing in CASES:
    ours = _ours_value_and_grad(name, options)
    theirs = _torch_value_and_grad(loss_type, smoothing)
    ours_value = float(ours(*ours_args)[0])
    torch_value = float(theirs(*torch_args)[0])
    if not np.isclose(ours_value, torch_value, rtol=1e-4, atol=1e-6):
      raise AssertionError(f"{name}: loss {ours_value} differs from TRL's {loss_type} "
                           f"(PyTorch) {torch_value}")
    # `_time_pair` calls both with the same positional arguments: adapt the torch side.
    ours_s, torch_s = objectives_bench._time_pair(  # pylint: disable=protected-access
        lambda _: ours(*ours_args), lambda _: theirs(*torch_args), None, repeats=repeats)
    out.append(dict(objective=name, torch=f"TRL {loss_type}" + (
        f" (label_smoothing={smoothing})" if smoothing else ""),
                    shape=list(pairs[0].shape), ours_ms=ours_s * 1e3, torch_ms=torch_s * 1e3,
                    ratio=ours_s / torch_s))
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4096)
  parser.add_argument("--list-size", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=50)
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  args = parser.parse_args(argv)
  table = rows(args.batch, args.list_size, args.repeats, threads=args.threads)
  print(f"forward+backward, {jax.devices()[0].platform}, median of {args.repeats}")
  print(f"{'objective':<10} {'shape':<12} {'ours ms':>9} {'torch ms':>9} {'ratio':>6}  peer")
  for r in table:
    print(f"{r['objective']:<10} {str(r['shape']):<12} {r['ours_ms']:9.3f} {r['torch_ms']:9.3f} "
          f"{r['ratio']:6.2f}  {r['torch']}")


if __name__ == "__main__":
  main()
