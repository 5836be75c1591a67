"""Side-by-side benchmarks against peers: one entry point, a Markdown table and a JSON file.

  python -m benchmarks.run [--cases=objectives,dpo_step,memory,listwise,mfu,data] \
      [--out=benchmarks/results] [--quick]

Cases (each row states both sides, `ratio = ours / peer`, the unit, the device and the
configuration):

| case | ours | peer |
|---|---|---|
| `objectives` | `jit(value_and_grad)` of pairwise and listwise objectives, `[4096, 8]` | google/rax (listwise, `benchmarks.objectives`); TRL's formulas in PyTorch (pairwise, `benchmarks.torch_objectives`) |
| `dpo_step` | full DPO train step, `small` Llama, 8 pairs x 256 tokens: tokens/s, peak RSS | TRL's DPO computation in PyTorch on transformers' `LlamaForCausalLM` (`benchmarks.dpo_step`); google/tunix where installable |
| `memory` | XLA temporary memory of chunked log-probs, value and gradient, V = 32k/128k/256k | naive `log_softmax` log-probs (`benchmarks.logprob_memory`) |
| `listwise` | K = 8 listwise step with prefix sharing | the same data as 28 DPO pairs per prompt (`benchmarks.listwise_cost`) |
| `mfu` | achieved FLOP/s of the DPO train step (XLA cost analysis) | measured dense-matmul peak of the device (`benchmarks.mfu`) |
| `data` | grain pipeline throughput, demo-like records (`benchmarks.data_pipeline`) | examples/s the demo's train step consumes |

`--quick` runs every case on tiny sizes (a smoke test; its numbers mean nothing). Peers that are
not installed (`bench` extra: rax, torch, transformers) give rows without a peer value. Shared
machines are noisy: compare the two sides of one run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import string
import sys
import time
from typing import Callable, Optional

import jax
import numpy as np

CASES = ("objectives", "dpo_step", "memory", "listwise", "mfu", "data")
MIB = 2**20


@dataclasses.dataclass
class Row:
  """One line of the results: `ours` and `peer` in `unit`, `ratio = ours / peer`."""

  case: str
  configuration: str
  ours_label: str
  ours: Optional[float]
  peer_label: str
  peer: Optional[float]
  unit: str
  device: str

  @property
  def ratio(self) -> Optional[float]:
    return None if self.peer is None or self.ours is None else self.ours / self.peer

  def as_dict(self) -> dict:
    return {**dataclasses.asdict(self), "ratio": self.ratio}


def device_description() -> str:
  """The CPU model (or accelerator kind), its core count and JAX's backend."""
  device = jax.devices()[0]
  if device.platform != "cpu":
    return f"{device.device_kind} ({device.platform})"
  model = platform.processor() or "cpu"
  try:
    with open("/proc/cpuinfo") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{model}, {os.cpu_count()} cores (jax cpu)"


def _installed(*modules: str) -> list[str]:
  """The names among `modules` that are not importable."""
  return [m for m in modules if importlib.util.find_spec(m) is None]


def _missing_peer_row(case, configuration, label, value, unit, device, missing) -> Row:
  return Row(case, configuration, label, value, f"not installed: {', '.join(missing)} "
             "(pip install -e '.[bench]')", None, unit, device)


def objectives_rows(quick: bool, device: str) -> list[Row]:
  """Listwise objectives vs rax, pairwise objectives vs TRL's formulas in PyTorch."""
  from benchmarks import objectives  # pylint: disable=g-import-not-at-top
  batch, k, repeats = (64, 8, 3) if quick else (4096, 8, 50)
  config = f"[{batch}, {k}] log-probs, fwd+bwd, jit, median of {repeats}"
  out = []
  missing = _installed("rax")
  if missing:
    out.append(_missing_peer_row("objectives", config, "listwise objectives", None, "ms",
                                 device, missing))
  else:
    for r in objectives.rows(batch, k, repeats):
      out.append(Row("objectives", f"{config}; on {r['shape']}", f"ours {r['objective']}",
                     r["ours_ms"], f"rax {r['rax']}", r["rax_ms"], "ms", device))
  missing = _installed("torch")
  if missing:
    out.append(_missing_peer_row("objectives", config, "pairwise objectives", None, "ms",
                                 device, missing))
  else:
    from benchmarks import torch_objectives  # pylint: disable=g-import-not-at-top
    for r in torch_objectives.rows(batch, k, repeats):
      out.append(Row("objectives", f"{config}; on {r['shape']}", f"ours {r['objective']}",
                     r["ours_ms"], f"{r['torch']} (PyTorch, 2 threads)", r["torch_ms"], "ms",
                     device))
  return out


def dpo_step_rows(quick: bool, device: str) -> list[Row]:
  """Full DPO step vs TRL's computation on transformers' Llama (PyTorch); tunix status."""
  from benchmarks import dpo_step  # pylint: disable=g-import-not-at-top
  sizes = (dict(preset="tiny", pairs=2, length=32, steps=1) if quick
           else dict(preset="small", pairs=8, length=256, steps=2))
  missing = _installed("torch", "transformers")
  if missing:
    return [_missing_peer_row("dpo_step", str(sizes), "ours", None, "tokens/s", device,
                              missing)]
  r = dpo_step.compare(**sizes)
  config = (f"{r['config']}; median of {sizes['steps']} steps after 1 warm-up; losses of all "
            f"steps agree")
  ours, torch_side = r["ours"], r["torch"]
  tokens = r["tokens_per_step"]
  return [
      Row("dpo_step", config, "ours (JAX, chunked log-probs)", tokens / ours["step_s"],
          "TRL DPO in PyTorch (LlamaForCausalLM, 2 threads)", tokens / torch_side["step_s"],
          "tokens/s", device),
      Row("dpo_step", config + "; whole process", "ours peak RSS", ours["peak_rss"] / MIB,
          "TRL DPO in PyTorch peak RSS", torch_side["peak_rss"] / MIB, "MiB", device),
      Row("dpo_step", config, "ours (JAX)", tokens / ours["step_s"], f"google/tunix: {r['tunix']}",
          None, "tokens/s", device),
  ]


def memory_rows(quick: bool, device: str) -> list[Row]:
  """XLA temporary memory of chunked vs naive log-probs (value and gradient; compile only)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from alignment.models import logprobs  # pylint: disable=g-import-not-at-top
  from benchmarks import logprob_memory as lm  # pylint: disable=g-import-not-at-top
  vocabs = lm.VOCABS[:1] if quick else lm.VOCABS
  out = []
  for v in vocabs:
    chunked, _ = lm.compiled_memory(logprobs.token_logps, v, jnp.bfloat16)
    naive, _ = lm.compiled_memory(lm.naive_token_logps, v, jnp.bfloat16)
    out.append(Row("memory", f"V={v}, {lm.BATCH}x{lm.LENGTH} tokens, D={lm.WIDTH}, bf16, "
                   f"value_and_grad, XLA temp bytes", "ours chunked token_logps", chunked / MIB,
                   "naive log_softmax(h @ W) f32", naive / MIB, "MiB", device))
  return out


def listwise_rows(quick: bool, device: str) -> list[Row]:
  """K = 8 listwise step with prefix sharing vs the same data as 28 DPO pairs per prompt."""
  from benchmarks import listwise_cost  # pylint: disable=g-import-not-at-top
  sizes = (dict(preset="tiny", prompts=1, k=4, prompt_length=8, response_length=4, steps=1)
           if quick else dict(preset="small", prompts=2, k=8, prompt_length=64,
                              response_length=32, steps=2))
  r = listwise_cost.compare(**sizes)
  config = f"{r['config']}; median of {sizes['steps']} steps"
  a, b = r["listwise"], r["pairwise"]
  return [
      Row("listwise", config, "listwise + prefix sharing", a["step_s"], "DPO pairs", b["step_s"],
          "s/step", device),
      Row("listwise", config, "listwise + prefix sharing", a["flops"] / 1e9, "DPO pairs",
          b["flops"] / 1e9, "GFLOP/step (XLA)", device),
      Row("listwise", config, "listwise + prefix sharing", a["xla_temp_bytes"] / MIB,
          "DPO pairs", b["xla_temp_bytes"] / MIB, "MiB XLA temp", device),
  ]


def mfu_rows(quick: bool, device: str) -> list[Row]:
  """Achieved FLOP/s of our DPO step against the measured matmul peak (ratio = MFU)."""
  from benchmarks import mfu  # pylint: disable=g-import-not-at-top
  sizes = (dict(preset="tiny", pairs=2, length=32, steps=1, matmul_size=256) if quick
           else dict(preset="small", pairs=8, length=256, steps=2, matmul_size=2048))
  r = mfu.measure(**sizes)
  return [Row("mfu", f"{r['config']}; {r['step_flops'] / 1e9:.1f} GFLOP/step (XLA); "
              "ratio = MFU", "ours DPO step achieved", r["achieved"] / 1e9,
              "dense-matmul peak (measured)", r["peak"] / 1e9, "GFLOP/s", device)]


def data_rows(quick: bool, device: str) -> list[Row]:
  """grain pipeline throughput vs the examples/s that the demo's train step consumes."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from alignment.data import batching  # pylint: disable=g-import-not-at-top
  from alignment.data import pipeline  # pylint: disable=g-import-not-at-top
  from alignment.data.tokenizers import CharTokenizer  # pylint: disable=g-import-not-at-top
  from alignment.training import setup  # pylint: disable=g-import-not-at-top
  from alignment.models import transformer  # pylint: disable=g-import-not-at-top
  from benchmarks import data_pipeline  # pylint: disable=g-import-not-at-top
  from benchmarks import dpo_step  # pylint: disable=g-import-not-at-top
  from alignment.recipes import demo  # pylint: disable=g-import-not-at-top
  records, batches, steps = (64, 5, 1) if quick else (4096, 200, 20)
  batch_size = 16
  source = data_pipeline.demo_records(records)
  throughput = data_pipeline.pipeline_throughput(source, batch_size=batch_size,
                                                 num_batches=batches)
  # The same pipeline's first batch through the demo model's train step.
  tokenizer = CharTokenizer(data_pipeline.ALPHABET + string.digits)
  batch = next(iter(pipeline.preference_dataset(
      source, tokenizer=tokenizer, batch_size=batch_size,
      config=batching.BatchConfig(max_prompt_tokens=16, max_response_tokens=16,
                                                list_size=4),
      seed=0, process_index=0, process_count=1)))
  batch = dict(batch)
  batch["ref_logps"] = np.random.default_rng(0).normal(-30.0, 3.0, batch["labels"].shape).astype(
      np.float32)
  cfg = demo.Config()
  config = cfg.model.build(tokenizer.vocab_size)
  params = jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))
  logp = setup.logp_fn(config, chunk_size=cfg.model.logprob_chunk)
  step, state = dpo_step.train_step(cfg.loss.name, logp, params)
  keys = ("tokens", "positions", "segment_ids", "completion_mask", "response_lengths", "labels",
          "where", "ref_logps")
  step_s = dpo_step.run_step(step, state, jax.device_put({k: jnp.asarray(batch[k])
                                                          for k in keys}), steps)["step_s"]
  return [Row("data", f"char tokenizer, batch {batch_size}, K=4, P=R=16, {records} in-memory "
              f"records, {batches} batches; step: demo model ({cfg.model.preset} D="
              f"{config.width} L={config.depth}) {cfg.loss.name}, median of {steps}",
              "grain pipeline", throughput["examples_per_s"], "train step consumption",
              batch_size / step_s, "examples/s", device)]


CASE_FNS: dict[str, Callable[[bool, str], list[Row]]] = {
    "objectives": objectives_rows, "dpo_step": dpo_step_rows, "memory": memory_rows,
    "listwise": listwise_rows, "mfu": mfu_rows, "data": data_rows,
}


def _number(x: Optional[float]) -> str:
  if x is None or not np.isfinite(x):
    return "—"
  return f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"


def markdown(rows: list[Row], command: str) -> str:
  """The results table, headed by the command that produced it."""
  lines = [f"Produced by `{command}` on {rows[0].device if rows else device_description()}.", "",
           "| case | configuration | ours | peer | ratio | unit | device |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r.case} | {r.configuration} | {_number(r.ours)} ({r.ours_label}) | "
                 f"{_number(r.peer)} ({r.peer_label}) | {_number(r.ratio)} | {r.unit} | "
                 f"{r.device} |")
  return "\n".join(lines) + "\n"


def parse_cases(text: str) -> list[str]:
  cases = [c.strip() for c in text.split(",") if c.strip()]
  unknown = [c for c in cases if c not in CASES]
  if unknown or not cases:
    raise ValueError(f"--cases: unknown {unknown or text!r}; known: {', '.join(CASES)}.")
  return cases


def main(argv=None) -> list[Row]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {CASES}")
  parser.add_argument("--out", default="benchmarks/results", help="directory for results.*")
  parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
  args = parser.parse_args(argv)
  cases = parse_cases(args.cases)
  command = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)
  device = device_description()
  rows, seconds = [], {}
  for case in cases:
    print(f"[benchmarks.run] {case} ...", flush=True)
    start = time.perf_counter()
    rows.extend(CASE_FNS[case](args.quick, device))
    seconds[case] = time.perf_counter() - start
    print(f"[benchmarks.run] {case}: {seconds[case]:.0f} s", flush=True)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(markdown(rows, command))
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump({"command": command, "quick": args.quick, "device": device,
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
               "versions": {"jax": jax.__version__, "python": platform.python_version()},
               "case_seconds": seconds, "rows": [r.as_dict() for r in rows]}, f, indent=2)
  print(markdown(rows, command))
  return rows


if __name__ == "__main__":
  main()
