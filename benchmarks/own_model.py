"""Bring your own model, measured: DPO + LoRA on a Hugging Face Llama, ours against TRL's trainer.

  python -m benchmarks.own_model [--quick] [--pairs=3] [--peer=trl|existing|none] [--out=PATH]

One run on this machine trains, on the same checkpoint and the same preference file:

- **ours**: the "Bring your own model" command (`alignment.recipes.align`, README) with LoRA:
  `python -m experiments.align --workdir=$OUT --config.model.path=$MODEL
  --config.train.data=$DATA --config.train.lora.rank=16 --config.train.reference=lora
  --config.train.num_steps=N --config.train.log_every=1` (log every step: the loop's progress
  lines are the clock, see below);
- **peer**: TRL's `DPOTrainer` (`trl==1.16.0`, `TRL_VERSION`) with a PEFT `LoraConfig` of the
  same rank, alpha (16), dropout (0) and targets (`q/k/v/o_proj`, `gate/up/down_proj`), the
  adapters-off base as the reference, in a venv of its own that the benchmark creates
  (`--peer=trl`; `existing` runs TRL only where that venv is already there, `none` never).

Both sides: a `small`-sized random float32 Llama written with transformers' `LlamaConfig` +
`save_pretrained` (V = 32000, D = 256, L = 4, H/G = 4/2, F = 1024, untied head) with a byte-level
BPE tokenizer and a Llama 3 chat template trained locally (`tests/hf_fixtures.py`; 400 ids, the
rest of the 32000 rows are never seen), TRL's conversational layout (`prompt` / `chosen` /
`rejected` message lists, rendered with the checkpoint's template), DPO's sigmoid loss (Rafailov
et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
NeurIPS 2023) with β = 0.1 on LoRA adapters (Hu et al., "LoRA: Low-Rank Adaptation of Large
Language Models", ICLR 2022), batch 8 pairs, AdamW at 1e-6 with a linear decay to 0, weight
decay 0, gradient clipping at 1, N = records / 8 steps (one epoch), float32 compute, no gradient
checkpointing (TRL's default turns it on; ours does not rematerialise by default), TRL's
`max_length` 1024 (nothing is truncated). Ours pads every batch to the longest prompt and
completion of the file (static shapes, compiled once); TRL pads each batch to its own longest
sequence (the token counts of both are reported).

Steps/s exclude start-up, data preparation and compilation: each side records the wall time at
the end of every step (ours: the arrival of the loop's progress line for that step, printed
after the step's metrics reach the host; TRL: a `TrainerCallback.on_step_end`), and the rate is
`(N - s0) / (t_N - t_s0)` with `s0` the first step after step 1 that our loop reported (it
prints at most every 5 s), the same `s0` for both sides. Peak memory is the whole process's
`VmHWM` (each side in its own subprocess, read as it ends: model, data, optimiser, compiled
program, export).

Protocol: the sides alternate (ours, TRL, ours, TRL, ...; `--pairs` pairs, at least 3 in full
mode); each reported ratio (ours / TRL) is the median of the per-pair ratios. The load average
(`uptime`) is recorded before and after, with the CPU the sides did not use (other processes,
from `/proc/stat`) while they ran; a run that starts at a 1-minute load above `MAX_LOAD` or in
which other processes used more than `MAX_OTHER_CPU` cores on average is marked "not
publishable" (the sides themselves keep the load near the core count, so the load after the run
is recorded but not judged). Writes `--out` (JSON, with the Markdown table) and prints the table.
`--quick` runs a tiny checkpoint for a few steps, one pair (a smoke test; its numbers mean
nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRL_VERSION = "1.16.0"
TRL_REQUIREMENTS = (f"trl=={TRL_VERSION}", "torch==2.13.0", "transformers==5.23.*", "peft")
DEFAULT_VENV = os.path.join(os.path.expanduser("~"), ".cache", "alignment-bench", "trl-venv")
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "own_model_results.json")
MAX_LOAD = 1.5
MAX_OTHER_CPU = 0.5
MIB = 2**20
BATCH = 8
BETA = 0.1
LEARNING_RATE = 1e-6
LORA_RANK = 16
LORA_ALPHA = 16
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The Llama 3 special tokens of `tests.hf_fixtures.write_tokenizer(family="llama3")`.
BOS_ID, EOS_ID = 0, 4


@dataclasses.dataclass(frozen=True)
class Sizes:
  """The checkpoint's shape (`LlamaConfig` fields) and the generated preference file."""

  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  intermediate_size: int
  records: int
  prompt_words: tuple[int, int]
  completion_words: tuple[int, int]


FULL = Sizes(32000, 256, 4, 4, 2, 1024, records=256, prompt_words=(16, 32),
             completion_words=(16, 40))
QUICK = Sizes(1000, 64, 2, 4, 2, 128, records=32, prompt_words=(4, 8), completion_words=(4, 8))


def describe(sizes: Sizes) -> str:
  return (f"HF Llama V={sizes.vocab_size} D={sizes.hidden_size} L={sizes.num_hidden_layers} "
          f"H/G={sizes.num_attention_heads}/{sizes.num_key_value_heads} "
          f"F={sizes.intermediate_size} f32, DPO (beta {BETA}) + LoRA r={LORA_RANK} "
          f"alpha={LORA_ALPHA} on {', '.join(LORA_TARGETS)}, {sizes.records} conversational "
          f"pairs, batch {BATCH}, {num_steps(sizes)} steps, AdamW lr {LEARNING_RATE} linear")


def num_steps(sizes: Sizes) -> int:
  """One epoch: `ceil(records / BATCH)`."""
  return -(-sizes.records // BATCH)


# ---------------------------------------------------------------------------------------------
# Inputs: the checkpoint folder and the preference file.

def write_checkpoint(folder: str, sizes: Sizes, seed: int = 0) -> str:
  """A random float32 `LlamaForCausalLM` of `sizes` with the fixtures' Llama 3 tokenizer."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  from tests import hf_fixtures  # pylint: disable=import-outside-toplevel

  config = transformers.LlamaConfig(
      vocab_size=sizes.vocab_size, hidden_size=sizes.hidden_size,
      num_hidden_layers=sizes.num_hidden_layers, num_attention_heads=sizes.num_attention_heads,
      num_key_value_heads=sizes.num_key_value_heads, intermediate_size=sizes.intermediate_size,
      max_position_embeddings=2048, rope_theta=10000.0, rms_norm_eps=1e-5,
      tie_word_embeddings=False, bos_token_id=BOS_ID, eos_token_id=EOS_ID, dtype="float32")
  torch.manual_seed(seed)
  transformers.LlamaForCausalLM(config).save_pretrained(folder)
  hf_fixtures.write_tokenizer(folder, "llama3")
  return folder


def preference_rows(sizes: Sizes, seed: int = 0) -> list[dict]:
  """TRL conversational pairs: a user message of `prompt_words` words drawn from the fixtures'
  corpus, two assistant messages of `completion_words` words (lengths uniform in the ranges)."""
  from tests import hf_fixtures  # pylint: disable=import-outside-toplevel

  rng = random.Random(seed)
  words = sorted({w for line in hf_fixtures.CORPUS for w in line.split()})
  text = lambda span: " ".join(rng.choices(words, k=rng.randint(*span)))
  return [{"prompt": [{"role": "user", "content": "Continue: " + text(sizes.prompt_words)}],
           "chosen": [{"role": "assistant", "content": text(sizes.completion_words)}],
           "rejected": [{"role": "assistant", "content": text(sizes.completion_words)}]}
          for _ in range(sizes.records)]


def write_jsonl(rows: list[dict], path: str) -> str:
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return path


# ---------------------------------------------------------------------------------------------
# The two sides, each in its own subprocess.

def ours_flags(model: str, data: str, workdir: str, steps: int) -> list[str]:
  """The flags of the README's command, with LoRA, the step count and per-step logging."""
  return [f"--workdir={workdir}", f"--config.model.path={model}", f"--config.train.data={data}",
          f"--config.train.lora.rank={LORA_RANK}", "--config.train.reference=lora",
          f"--config.train.num_steps={steps}", "--config.train.log_every=1"]


def run_ours_binary(argv: list[str], result: str) -> None:
  """Runs `python -m experiments.align` with `argv` in this process; writes its `VmHWM`."""
  import runpy  # pylint: disable=import-outside-toplevel

  from benchmarks import dpo_step  # pylint: disable=import-outside-toplevel

  sys.argv = ["experiments/align.py"] + argv
  code = 0
  try:
    runpy.run_module("experiments.align", run_name="__main__", alter_sys=True)
  except SystemExit as e:
    code = e.code or 0
  finally:
    with open(result, "w") as f:
      json.dump({"peak_rss": dpo_step.peak_rss_bytes()}, f)
  sys.exit(code)


# `[train[dpo]] 12/32 | 1.23 steps/s | ETA 0:00:16 | loss 0.6931`: `alignment.training.logs`.
PROGRESS_LINE = re.compile(r"^\[train\[[^\]]*\]\] (\d+)/(\d+) \|")
# `[align] 256 records, 32 steps of 8; shapes: prompt 57, completion 45 tokens`.
SHAPES_LINE = re.compile(r"^\[align\] (\d+) records, (\d+) steps of (\d+); shapes: prompt (\d+), "
                         r"completion (\d+) tokens")


def run_ours(model: str, data: str, steps: int, scratch: str) -> dict:
  """Our side in a subprocess; the wall times of its progress lines are taken as they arrive.

  Returns:
    `{"step_times": {step: seconds}, "peak_rss", "cpu_s", "tokens_per_step" (padded: batch x 2
    x (prompt + completion) static shape), "shapes"}`.
  """
  with tempfile.TemporaryDirectory(dir=scratch, prefix="ours-") as workdir:
    return _run_ours_in(model, data, steps, workdir)


def _run_ours_in(model: str, data: str, steps: int, workdir: str) -> dict:
  result = os.path.join(workdir, "side.json")
  command = [sys.executable, "-m", "benchmarks.own_model", f"--side_result={result}",
             "--side=ours", "--"] + ours_flags(model, data, os.path.join(workdir, "out"), steps)
  times, shapes, tail = {}, None, []
  with open(os.path.join(workdir, "stderr.log"), "w") as err:
    cpu = _children_cpu_s()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                            bufsize=1, env=dict(os.environ, PYTHONPATH=ROOT))
    for line in proc.stdout:
      now = time.perf_counter()
      tail = (tail + [line])[-20:]
      if (m := PROGRESS_LINE.match(line)):
        times[int(m.group(1))] = now
      elif (m := SHAPES_LINE.match(line)):
        shapes = [int(g) for g in m.groups()]
    code = proc.wait()
    cpu = _children_cpu_s() - cpu
  if code != 0:
    with open(os.path.join(workdir, "stderr.log")) as f:
      raise RuntimeError(f"ours failed ({code}):\n{''.join(tail)}\n{f.read()[-3000:]}")
  if shapes is None or shapes[1] != steps or steps not in times:
    raise RuntimeError(f"ours: no shapes line or no progress line for step {steps}:\n"
                       + "".join(tail))
  with open(result) as f:
    peak = json.load(f)["peak_rss"]
  _, _, batch, prompt, completion = shapes
  return {"step_times": times, "peak_rss": peak, "cpu_s": cpu,
          "tokens_per_step": batch * 2 * (prompt + completion),
          "shapes": {"prompt": prompt, "completion": completion}}


def run_trl_side(model: str, data: str, steps: int, result: str) -> None:
  """TRL's DPOTrainer + PEFT LoRA in this process (the venv's Python); writes per-step times."""
  # pylint: disable=import-outside-toplevel
  import datasets
  import peft
  import torch
  import transformers
  import trl

  from benchmarks import dpo_step
  # pylint: enable=import-outside-toplevel

  class StepTimes(transformers.TrainerCallback):

    def __init__(self):
      self.times = {}

    def on_step_end(self, args, state, control, **kwargs):
      self.times[state.global_step] = time.perf_counter()

  transformers.utils.logging.disable_progress_bar()
  datasets.disable_progress_bars()
  with open(data, encoding="utf-8") as f:
    dataset = datasets.Dataset.from_list([json.loads(line) for line in f if line.strip()])
  tokenizer = transformers.AutoTokenizer.from_pretrained(model)
  policy = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
  lora = peft.LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                         target_modules=list(LORA_TARGETS), bias="none", task_type="CAUSAL_LM")
  args = trl.DPOConfig(
      output_dir=os.path.join(os.path.dirname(result), "trl-out"),
      per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=LEARNING_RATE,
      lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
      beta=BETA, loss_type=["sigmoid"], max_length=1024, bf16=False,
      gradient_checkpointing=False, activation_checkpointing=False, use_cpu=True,
      save_strategy="no", report_to=[], logging_steps=10, disable_tqdm=True,
      dataloader_pin_memory=False, seed=0)
  clock = StepTimes()
  trainer = trl.DPOTrainer(model=policy, args=args, train_dataset=dataset,
                           processing_class=tokenizer, peft_config=lora, callbacks=[clock])
  tokens = [len(r["prompt_ids"]) + len(r[c])
            for r in trainer.train_dataset for c in ("chosen_ids", "rejected_ids")]
  trainer.train()
  with open(result, "w") as f:
    json.dump({"step_times": clock.times,
               "peak_rss": dpo_step.peak_rss_bytes(),
               "tokens_mean": statistics.mean(tokens), "tokens_max": max(tokens),
               "versions": {"trl": trl.__version__, "torch": torch.__version__,
                            "transformers": transformers.__version__,
                            "peft": peft.__version__},
               "torch_threads": torch.get_num_threads()}, f)


def ensure_venv(venv: str, create: bool) -> Optional[str]:
  """The venv's Python with TRL importable, creating the venv when `create`; None if absent."""
  python = os.path.join(venv, "bin", "python")
  probe = [python, "-c", "import trl, peft, torch, transformers, datasets"]
  if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
    return python
  if not create:
    return None
  print(f"[own_model] creating {venv}: pip install {' '.join(TRL_REQUIREMENTS)}", flush=True)
  subprocess.run([sys.executable, "-m", "venv", venv], check=True)
  subprocess.run([python, "-m", "pip", "install", "--quiet", *TRL_REQUIREMENTS], check=True)
  subprocess.run(probe, check=True)
  return python


def run_trl(python: str, model: str, data: str, steps: int, scratch: str) -> dict:
  """The peer in a subprocess of the venv's Python."""
  with tempfile.TemporaryDirectory(dir=scratch, prefix="trl-") as workdir:
    return _run_trl_in(python, model, data, steps, workdir)


def _run_trl_in(python: str, model: str, data: str, steps: int, workdir: str) -> dict:
  result = os.path.join(workdir, "side.json")
  command = [python, "-m", "benchmarks.own_model", f"--side_result={result}", "--side=trl",
             f"--side_model={model}", f"--side_data={data}", f"--side_steps={steps}"]
  cpu = _children_cpu_s()
  proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=ROOT, HF_HUB_OFFLINE="1",
                                 HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false"))
  cpu = _children_cpu_s() - cpu
  if proc.returncode != 0:
    raise RuntimeError(f"TRL failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  with open(result) as f:
    out = json.load(f)
  out["step_times"] = {int(k): v for k, v in out["step_times"].items()}
  out["cpu_s"] = cpu
  return out


# ---------------------------------------------------------------------------------------------
# Protocol: alternation, rates, load.

def _children_cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def busy_cpu_s() -> float:
  """CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq)."""
  with open("/proc/stat") as f:
    fields = [int(x) for x in f.readline().split()[1:]]
  return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


def load_average() -> dict:
  """`uptime`'s line and the 1-minute load average."""
  line = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
  return {"uptime": line, "load1": os.getloadavg()[0]}


def first_timed_step(times: dict) -> int:
  """`s0`: the first step after step 1 that our loop reported before the last one (else 1)."""
  last = max(times)
  return min([s for s in times if 1 < s < last] or [1])


def steps_per_s(times: dict, start: int) -> float:
  """`(N - start) / (t_N - t_start)`, N the last step."""
  last = max(times)
  return (last - start) / (times[last] - times[start])


def publishable(load_before: float, other_cpu: float) -> bool:
  return load_before <= MAX_LOAD and other_cpu <= MAX_OTHER_CPU


def measure(sizes: Sizes, pairs: int, trl_python: Optional[str], scratch: str) -> dict:
  """Writes the inputs, runs the sides alternately `pairs` times, returns every measurement.

  A failed TRL run is not retried: `trl_error` says why, and ours goes on alone.
  """
  model = write_checkpoint(os.path.join(scratch, "model"), sizes)
  data = write_jsonl(preference_rows(sizes), os.path.join(scratch, "prefs.jsonl"))
  steps = num_steps(sizes)
  before = load_average()
  busy, wall, sides_cpu = busy_cpu_s(), time.perf_counter(), 0.0
  runs, trl_error = [], None
  for i in range(pairs):
    print(f"[own_model] pair {i + 1}/{pairs}: ours", flush=True)
    ours = run_ours(model, data, steps, scratch)
    theirs = None
    if trl_python is not None:
      print(f"[own_model] pair {i + 1}/{pairs}: TRL", flush=True)
      try:
        theirs = run_trl(trl_python, model, data, steps, scratch)
      except RuntimeError as e:  # said in the peer's row; ours goes on alone
        trl_error, trl_python = f"TRL failed: {str(e).strip().splitlines()[-1]}", None
    start = first_timed_step(ours["step_times"])
    ours["steps_per_s"] = steps_per_s(ours["step_times"], start)
    sides_cpu += ours["cpu_s"]
    if theirs is not None:
      theirs["steps_per_s"] = steps_per_s(theirs["step_times"], start)
      sides_cpu += theirs["cpu_s"]
    runs.append({"timed_from_step": start, "ours": ours, "trl": theirs})
  other_cpu = (busy_cpu_s() - busy - sides_cpu) / (time.perf_counter() - wall)
  after = load_average()
  return {"steps": steps, "runs": runs, "trl_error": trl_error, "load_before": before,
          "load_after": after, "other_cpu_cores": max(other_cpu, 0.0),
          "publishable": publishable(before["load1"], other_cpu)}


QUANTITIES = (("steps_per_s", "steps/s", 1.0), ("peak_rss", "peak RSS (VmHWM), MiB", 1.0 / MIB))


def summary(measured: dict, peer: str) -> list[dict]:
  """One row per quantity: each side's per-run values and median, and `ratio`, the median of
  the per-pair ratios ours / TRL (None without TRL runs); `peer` labels the TRL side."""
  out = []
  for key, quantity, scale in QUANTITIES:
    ours = [r["ours"][key] * scale for r in measured["runs"]]
    theirs = [r["trl"][key] * scale for r in measured["runs"] if r["trl"] is not None]
    out.append({"quantity": quantity, "ours_runs": ours, "ours": statistics.median(ours),
                "peer_label": peer, "peer_runs": theirs,
                "peer": statistics.median(theirs) if theirs else None,
                "ratio": statistics.median([a / b for a, b in zip(ours, theirs)])
                         if theirs else None})
  return out


def configuration(measured: dict, sizes: Sizes) -> str:
  """The setting both sides ran, with the tokens each processed per step."""
  first = measured["runs"][0]
  ours, trl = first["ours"], first["trl"]
  return (f"{describe(sizes)}; ours {ours['tokens_per_step']} tokens/step (static shapes: "
          f"prompt {ours['shapes']['prompt']} + completion {ours['shapes']['completion']})"
          + (f", TRL {2 * BATCH} x {trl['tokens_mean']:.0f} tokens on average (longest "
             f"{trl['tokens_max']}, padded per batch)" if trl else "")
          + f"; {len(measured['runs'])} alternating pairs, steps {first['timed_from_step']}-"
          f"{measured['steps']} timed")


def peer_label(measured: dict, status: str) -> str:
  trl = next((r["trl"] for r in measured["runs"] if r["trl"] is not None), None)
  if trl is None:
    return measured["trl_error"] or status
  v = trl["versions"]
  return (f"TRL {v['trl']} DPOTrainer + PEFT {v['peft']} LoRA (transformers "
          f"{v['transformers']}, torch {v['torch']}, {trl['torch_threads']} threads)")


def markdown(table: list[dict], measured: dict, config: str, command: str, device: str) -> str:
  """The table (median; per-run values) headed by the command, then the load and verdict."""
  number = lambda x: "—" if x is None else f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"
  runs = lambda xs: ", ".join(number(x) for x in xs) or "—"
  lines = [f"Produced by `{command}` on {device}: {config}.", "",
           f"| quantity | ours: align recipe + LoRA | peer: {table[0]['peer_label']} | "
           "ours / peer (median of per-pair ratios) |", "|---|---|---|---|"]
  for row in table:
    lines.append(f"| {row['quantity']} | {number(row['ours'])} ({runs(row['ours_runs'])}) | "
                 f"{number(row['peer'])} ({runs(row['peer_runs'])}) | {number(row['ratio'])} |")
  before, after = measured["load_before"], measured["load_after"]
  verdict = ("publishable" if measured["publishable"] else
             f"**not publishable** (load before > {MAX_LOAD} or other processes > "
             f"{MAX_OTHER_CPU} cores)")
  lines += ["", "Median (per run). Load: before `" + before["uptime"] + "`; after `"
            + after["uptime"] + f"`; other processes used {measured['other_cpu_cores']:.2f} "
            f"cores on average while the sides ran: {verdict}."]
  return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny checkpoint (a smoke test)")
  parser.add_argument("--pairs", type=int, default=None, help="ours/TRL pairs (full: >= 3)")
  parser.add_argument("--peer", choices=("trl", "existing", "none"), default="trl",
                      help="trl: create the venv if needed; existing: only if it is there")
  parser.add_argument("--venv", default=DEFAULT_VENV)
  parser.add_argument("--out", default=None, help=f"JSON results (full: {DEFAULT_OUT})")
  parser.add_argument("--side", choices=("ours", "trl"), default=None, help="internal")
  parser.add_argument("--side_result", default=None, help="internal")
  parser.add_argument("--side_model", default=None, help="internal")
  parser.add_argument("--side_data", default=None, help="internal")
  parser.add_argument("--side_steps", type=int, default=0, help="internal")
  parser.add_argument("side_argv", nargs="*", help="internal: the binary's flags (after --)")
  args = parser.parse_args(argv)
  if args.side == "ours":
    return run_ours_binary(args.side_argv, args.side_result)
  if args.side == "trl":
    return run_trl_side(args.side_model, args.side_data, args.side_steps, args.side_result)
  pairs = args.pairs or (1 if args.quick else 3)
  if not args.quick and pairs < 3:
    parser.error("--pairs: the full mode alternates at least 3 pairs.")
  out = args.out or (os.path.join(tempfile.gettempdir(), "own_model_results_quick.json")
                     if args.quick else DEFAULT_OUT)
  command = " ".join(["python -m benchmarks.own_model", *(sys.argv[1:] if argv is None else argv)])
  sizes = QUICK if args.quick else FULL
  trl_python, peer_status = None, "TRL not run (--peer=none)"
  if args.peer != "none":
    try:
      trl_python = ensure_venv(args.venv, create=args.peer == "trl")
    except subprocess.CalledProcessError as e:
      peer_status = f"TRL could not be installed in {args.venv}: {e}"
    if trl_python is None and args.peer == "existing":
      peer_status = f"TRL not run: no venv at {args.venv} (--peer=existing)"
  from benchmarks import run  # pylint: disable=import-outside-toplevel

  device = run.device_description()
  with tempfile.TemporaryDirectory() as scratch:
    measured = measure(sizes, pairs, trl_python, scratch)
  table = summary(measured, peer_label(measured, peer_status))
  config = configuration(measured, sizes)
  text = markdown(table, measured, config, command, device)
  results = {"command": command, "quick": args.quick, "device": device,
             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
             "ours_command": "python -m experiments.align " + " ".join(
                 ours_flags("$MODEL", "$DATA", "$OUT", measured["steps"])),
             "configuration": config, "sizes": dataclasses.asdict(sizes), "rows": table,
             "markdown": text,
             **{k: measured[k] for k in ("steps", "trl_error", "load_before", "load_after",
                                         "other_cpu_cores", "publishable")},
             "runs": measured["runs"]}
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(results, f, indent=2)
  print(text)
  return results


if __name__ == "__main__":
  main()
