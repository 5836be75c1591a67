"""Throughput of the grain preference pipeline (examples/s) in the demo-like configuration.

Char tokenizer, prompts of ~10 characters, K = 4 responses of ~10 characters, batch 16, read
from an in-memory list and from an ArrayRecord dataset built by `alignment.data.builders`.

    python -m benchmarks.data_pipeline [--records 4096] [--batches 200]

`pipeline_throughput` is the function to call from elsewhere (e.g. next to a measurement of the
training step's consumption rate, to see which side is the bottleneck).
"""

from __future__ import annotations

import argparse
import json
import os
import string
import tempfile
import time
from typing import Any, Mapping, Sequence

import numpy as np

from alignment.data import batching
from alignment.data import builders
from alignment.data import pipeline
from alignment.data.tokenizers import CharTokenizer

ALPHABET = string.ascii_lowercase + " "


def demo_records(n: int, *, k: int = 4, length: int = 10, seed: int = 0) -> list[dict]:
  """n canonical records: random prompts and K distinct responses of ~`length` characters."""
  rng = np.random.default_rng(seed)
  text = lambda: "".join(rng.choice(list(string.ascii_lowercase), rng.integers(length - 2,
                                                                               length + 3)))
  return [{"prompt": text(), "responses": [f"{j}{text()}" for j in range(k)],
           "scores": rng.permutation(k).astype(float).tolist()} for _ in range(n)]


def pipeline_throughput(
    source: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 16,
    num_batches: int = 200,
    config: batching.BatchConfig = batching.BatchConfig(
        max_prompt_tokens=16, max_response_tokens=16, list_size=4),
    tokenizer=None,
    warmup_batches: int = 5,
) -> dict[str, float]:
  """Measures how fast `pipeline.preference_dataset` produces batches from `source`.

  Returns:
    `{"examples_per_s", "batches_per_s", "seconds", "batches"}` over `num_batches` batches after
    `warmup_batches` (iterator start-up and first reads are not counted).
  """
  tokenizer = tokenizer or CharTokenizer(ALPHABET + string.digits)
  iterator = iter(pipeline.preference_dataset(
      source, tokenizer=tokenizer, batch_size=batch_size, config=config, seed=0,
      process_index=0, process_count=1))
  for _ in range(warmup_batches):
    next(iterator)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  seconds = time.perf_counter() - start
  return {"examples_per_s": num_batches * batch_size / seconds,
          "batches_per_s": num_batches / seconds, "seconds": seconds, "batches": num_batches}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--records", type=int, default=4096)
  parser.add_argument("--batches", type=int, default=200)
  args = parser.parse_args()
  records = demo_records(args.records)
  results = {"in_memory": pipeline_throughput(records, num_batches=args.batches)}
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "demo.jsonl")
    with open(path, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in records)
    start = time.perf_counter()
    dataset_dir = builders.build({"train": path}, layout="listwise", data_dir=tmp, name="demo")
    build_s = time.perf_counter() - start
    source, _ = builders.load(dataset_dir, "train")
    results["array_record"] = pipeline_throughput(source, num_batches=args.batches)
  print(f"pipeline (char tokenizer, prompt ~10 chars, K=4 responses ~10 chars, batch 16, "
        f"{args.records} records)")
  print(f"  build ArrayRecord: {build_s:.2f} s ({args.records / build_s:.0f} records/s)")
  for name, r in results.items():
    print(f"  {name:13s} {r['examples_per_s']:9.0f} examples/s  {r['batches_per_s']:7.1f} "
          f"batches/s  ({r['batches']} batches in {r['seconds']:.2f} s)")


if __name__ == "__main__":
  main()
