"""One full DPO training step: ours (JAX) against TRL's DPO computation in PyTorch, same CPU.

  python -m benchmarks.dpo_step [--preset=small] [--pairs=8] [--length=256] [--steps=3] \
      [--threads=2]

Both sides train the same Llama decoder (preset `small`: V = 32000, D = 256, L = 4, H/G = 4/2,
F = 1024, untied head; float32 compute) from the same weights (our parameters written as a HF
checkpoint with `alignment.models.hf.save_hf_checkpoint` and read back by each side) on the same
batch: `pairs` (chosen, rejected) rows of `length` tokens, prompt = the first quarter, the rest
completion, no padding, and the same precomputed reference log-probs (TRL's
`precompute_ref_log_probs=True`). One step = forward, DPO sigmoid loss (β = 0.1), backward and an
AdamW update (lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.01).

- ours: `alignment.training.step.make_train_step` over
  `alignment.training.objective.preference_loss("dpo", ...)`, sequence log-probs from
  `alignment.models.logprobs.sequence_logps` (chunked LM head), one jitted, donated step.
- peer: TRL's `DPOTrainer` computation reproduced in plain PyTorch on transformers'
  `LlamaForCausalLM` (TRL itself is not needed): `concatenated_forward` (chosen and rejected
  stacked into one `[2·pairs, length]` batch, full `[2·pairs, length, V]` logits,
  `selective_log_softmax` = gathered logits minus a per-row `logsumexp`, masked sum over the
  completion), `dpo_loss` with `loss_type="sigmoid"`, `loss.backward()`, `torch.optim.AdamW`.
- google/tunix: not run where it is not installed (see `TUNIX_STATUS`).

Each side runs in its own subprocess, so that its peak resident memory (`VmHWM`) is its own;
the losses of every step must agree across the two sides (same maths, same weights, same
optimiser) before anything is reported. Times: median over `--steps` timed steps after a
warm-up (compile) step. Machines are noisy: compare the two sides of one run only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

BETA = 0.1
LEARNING_RATE = 1e-4
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
WEIGHT_DECAY = 0.01
# `pip install --dry-run google-tunix` (google-tunix 0.1.7, checked for this benchmark) keeps
# jax and flax but would replace transformers 5.23 by 5.12.1, safetensors 0.8 by 0.7 and
# tokenizers 0.23 by 0.22, outside this project's pinned ranges, so it is not installed here.
TUNIX_STATUS = ("not installable beside this project: pip install --dry-run google-tunix (0.1.7) "
                "would downgrade transformers 5.23->5.12.1, safetensors 0.8->0.7, "
                "tokenizers 0.23->0.22")


def _rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
  """This process's peak resident memory (`VmHWM`; unlike `ru_maxrss`, not inherited from the
  parent across fork and exec)."""
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def make_batch(vocab_size: int, *, pairs: int, length: int, seed: int = 0) -> dict:
  """A DPO batch in the layout of docs/interfaces.md#batches (`[pairs, 2, length]`, no padding).

  Prompt = the first `length // 4` tokens (shared by chosen and rejected), completion = the rest.
  `ref_logps` are random around a uniform model's log-probs (`−n·log V`), so that the DPO
  margin `h` is not 0 at the first step.
  """
  rng = np.random.default_rng(seed)
  prompt = max(length // 4, 1)
  tokens = rng.integers(1, vocab_size, (pairs, 2, length)).astype(np.int32)
  tokens[:, 1, :prompt] = tokens[:, 0, :prompt]
  completion = np.zeros((pairs, 2, length), bool)
  completion[..., prompt:] = True
  n = length - prompt
  return {
      "tokens": tokens,
      "positions": np.broadcast_to(np.arange(length, dtype=np.int32), tokens.shape).copy(),
      "segment_ids": np.ones_like(tokens),
      "completion_mask": completion,
      "response_lengths": np.full((pairs, 2), n, np.int32),
      "labels": np.broadcast_to(np.array([1.0, 0.0], np.float32), (pairs, 2)).copy(),
      "where": np.ones((pairs, 2), bool),
      "ref_logps": (-n * np.log(vocab_size) + rng.normal(0.0, 3.0, (pairs, 2))).astype(
          np.float32),
  }


# LM-head tiles of a program compiled only to count FLOPs: XLA's cost analysis counts a loop body
# once, so the chunked head is counted in full only when it is a single tile.
SINGLE_TILE = {"chunk_size": 2**30, "vocab_chunk_size": None}


def logp_fn(config, *, single_tile: bool = False):
  """`(params, batch) -> (logps [B, K], counts [B, K])`: `sequence_logps` over the batch layout.

  `single_tile=False`: the library's default LM-head tiles; True: `SINGLE_TILE`.
  """
  from alignment.models import logprobs  # pylint: disable=g-import-not-at-top
  tiles = SINGLE_TILE if single_tile else {}

  def fn(params, batch):
    return logprobs.sequence_logps(
        config, params, batch["tokens"], batch["positions"], batch["segment_ids"],
        batch["completion_mask"], **tiles)

  return fn


def train_step(objective_name: str, batch_logp_fn, params, *, donate: bool = True):
  """`(step, state)`: our jitted step `(state, batch, frozen) -> (state, metrics)`.

  `alignment.training.step.make_train_step` over `alignment.training.objective.preference_loss`
  of `objective_name` (β = `BETA`, cached reference log-probs) with this benchmark's AdamW.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from alignment.training import objective  # pylint: disable=g-import-not-at-top
  from alignment.training import step as step_lib  # pylint: disable=g-import-not-at-top

  loss = objective.preference_loss(objective_name, batch_logp_fn, reference="cache",
                                   hyper_parameters={"beta": BETA})
  optimizer = optax.adamw(LEARNING_RATE, b1=ADAM_BETAS[0], b2=ADAM_BETAS[1], eps=ADAM_EPS,
                          weight_decay=WEIGHT_DECAY)
  step = step_lib.make_train_step(loss, optimizer, donate=donate)
  return step, step_lib.init_train_state(params, optimizer, jax.random.key(0))


def timed_steps(step_once, steps: int) -> dict:
  """Runs `step_once()` (returns the loss; blocks) once to warm up, then `steps` timed times.

  Returns:
    `{"losses" (warm-up step first), "step_s" (median seconds), "times", "peak_rss" (process
    peak resident bytes), "rss_before_steps" (resident bytes before the warm-up step)}`.
  """
  rss_before = _rss_bytes()
  losses = [step_once()]
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    losses.append(step_once())
    times.append(time.perf_counter() - start)
  return {"losses": losses, "step_s": statistics.median(times), "times": times,
          "peak_rss": peak_rss_bytes(), "rss_before_steps": rss_before}


def run_step(step, state, batch, steps: int) -> dict:
  """Compiles `step` for `(state, batch)` and times it (`timed_steps`); adds `xla_temp_bytes`."""
  compiled = step.lower(state, batch, None).compile()
  holder = {"state": state}

  def step_once():
    holder["state"], metrics = compiled(holder["state"], batch, None)
    return float(metrics["loss"])  # blocks until the step is done

  out = timed_steps(step_once, steps)
  out["xla_temp_bytes"] = int(compiled.memory_analysis().temp_size_in_bytes)
  return out


def run_ours(checkpoint: str, batch: dict, steps: int) -> dict:
  """Our side (in this process): load the HF checkpoint, jit the step, time it."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from alignment.models import hf  # pylint: disable=g-import-not-at-top

  config, params = hf.load_hf_checkpoint(checkpoint, dtype=jnp.float32)
  step, state = train_step("dpo", logp_fn(config), params)
  out = run_step(step, state, jax.device_put(batch), steps)
  out["device"] = f"{jax.devices()[0].device_kind} ({jax.default_backend()})"
  return out


def trl_dpo_step(model, optimizer, batch) -> float:
  """One step of TRL's DPO (`loss_type="sigmoid"`) on `LlamaForCausalLM`, in plain PyTorch.

  Mirrors `DPOTrainer.concatenated_forward` + `dpo_loss` + the optimizer step; returns the loss.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  pairs = batch["tokens"].shape[0]
  input_ids = torch.cat([batch["tokens"][:, 0], batch["tokens"][:, 1]])  # [2·pairs, T]
  loss_mask = torch.cat([batch["completion_mask"][:, 0], batch["completion_mask"][:, 1]])
  logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
  logits, labels, loss_mask = logits[:, :-1], input_ids[:, 1:], loss_mask[:, 1:]
  # TRL's selective_log_softmax for float32 logits: gather minus a per-row logsumexp.
  selected = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
  logsumexp = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
  all_logps = ((selected - logsumexp) * loss_mask).sum(-1)
  chosen, rejected = all_logps[:pairs], all_logps[pairs:]
  ref_chosen, ref_rejected = batch["ref_logps"][:, 0], batch["ref_logps"][:, 1]
  margin = (chosen - rejected) - (ref_chosen - ref_rejected)
  loss = -F.logsigmoid(BETA * margin).mean()
  loss.backward()
  optimizer.step()
  optimizer.zero_grad(set_to_none=True)
  return float(loss.detach())


def run_torch(checkpoint: str, batch: dict, steps: int, threads: int) -> dict:
  """The peer (in this process): transformers' LlamaForCausalLM + TRL's DPO step in PyTorch."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(threads)
  transformers.utils.logging.disable_progress_bar()
  model = transformers.LlamaForCausalLM.from_pretrained(checkpoint, dtype=torch.float32,
                                                        attn_implementation="sdpa")
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=ADAM_BETAS,
                                eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)
  tensors = {k: torch.from_numpy(np.ascontiguousarray(batch[k]))
             for k in ("tokens", "completion_mask", "ref_logps")}
  tensors["tokens"] = tensors["tokens"].long()
  out = timed_steps(lambda: trl_dpo_step(model, optimizer, tensors), steps)
  out["device"] = f"cpu (torch {torch.__version__}, {threads} threads)"
  return out


def compare(*, preset: str = "small", pairs: int = 8, length: int = 256, steps: int = 3,
            threads: int = 2, seed: int = 0) -> dict:
  """Runs both sides in subprocesses on identical weights and batch; checks their losses agree.

  Returns:
    `{"config": ..., "ours": {...}, "torch": {...}, "tunix": str, "tokens_per_step": int}`,
    each side with `step_s` (median), `losses` (warm-up step first), `peak_rss` and
    `rss_before_steps` (bytes).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from alignment.models import config as config_lib  # pylint: disable=g-import-not-at-top
  from alignment.models import hf  # pylint: disable=g-import-not-at-top
  from alignment.models import transformer  # pylint: disable=g-import-not-at-top

  config = config_lib.get_config(preset, dtype=jnp.float32)
  params = jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(seed))
  batch = make_batch(config.vocab_size, pairs=pairs, length=length, seed=seed)
  results = {}
  with tempfile.TemporaryDirectory() as workdir:
    hf.save_hf_checkpoint(config, params, os.path.join(workdir, "model"))
    np.savez(os.path.join(workdir, "batch.npz"), **batch)
    for side in ("ours", "torch"):
      subprocess.run([sys.executable, "-m", "benchmarks.dpo_step", f"--side={side}",
                      f"--workdir={workdir}", f"--steps={steps}", f"--threads={threads}"],
                     check=True)
      with open(os.path.join(workdir, f"{side}.json")) as f:
        results[side] = json.load(f)
  ours, theirs = np.array(results["ours"]["losses"]), np.array(results["torch"]["losses"])
  if not np.allclose(ours, theirs, rtol=1e-3, atol=1e-4):
    raise AssertionError(f"DPO step losses differ: ours {ours.tolist()}, "
                         f"TRL/PyTorch {theirs.tolist()}")
  has_tunix = importlib.util.find_spec("tunix") is not None
  return {
      "config": (f"{preset} (V={config.vocab_size} D={config.width} L={config.depth} "
                 f"H/G={config.num_heads}/{config.num_kv_heads} F={config.mlp_dim}) f32, "
                 f"{pairs} pairs x {length} tokens, AdamW"),
      "tokens_per_step": 2 * pairs * length,
      "ours": results["ours"],
      "torch": results["torch"],
      "tunix": "installed but not benchmarked" if has_tunix else TUNIX_STATUS,
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="small")
  parser.add_argument("--pairs", type=int, default=8)
  parser.add_argument("--length", type=int, default=256)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  parser.add_argument("--side", choices=("ours", "torch"), default=None,
                      help="internal: run one side on --workdir's checkpoint and batch")
  parser.add_argument("--workdir", default=None)
  args = parser.parse_args(argv)
  if args.side:
    with np.load(os.path.join(args.workdir, "batch.npz")) as data:
      batch = dict(data)
    checkpoint = os.path.join(args.workdir, "model")
    out = (run_ours(checkpoint, batch, args.steps) if args.side == "ours"
           else run_torch(checkpoint, batch, args.steps, args.threads))
    with open(os.path.join(args.workdir, f"{args.side}.json"), "w") as f:
      json.dump(out, f)
    return
  r = compare(preset=args.preset, pairs=args.pairs, length=args.length, steps=args.steps,
              threads=args.threads)
  print(r["config"])
  for side in ("ours", "torch"):
    s = r[side]
    print(f"  {side:6s} {s['step_s']:.3f} s/step  {r['tokens_per_step'] / s['step_s']:8.0f} "
          f"tokens/s  peak RSS {s['peak_rss'] / 2**20:.0f} MiB  losses {s['losses']}")
  print(f"  tunix: {r['tunix']}")


if __name__ == "__main__":
  main()
