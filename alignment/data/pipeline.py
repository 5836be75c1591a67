"""Grain pipelines: canonical records -> deterministic, checkpointable batches.

    source (list of records, or `builders.load(...)[0]`)
      -> shard by process (`[process_index::process_count]`: disjoint shards that cover the data)
      -> shuffle by seed (a new permutation each epoch) -> repeat(num_epochs)
      -> tokenize (`batching.tokenize_record`, in grain's reader threads)
      -> batch (`batching.collate`), counting what the length policy did

`iter(preference_dataset(...))` is a grain `DatasetIterator`: `get_state()` returns a
JSON-serialisable dict (the position in the stream and the counts so far) and `set_state(state)`
continues with exactly the batches an uninterrupted run would produce. In an orbax
`CheckpointManager`, save it with `grain.checkpoint.CheckpointSave(iterator)` (item handler
`grain.checkpoint.CheckpointHandler()`) and restore it with `CheckpointRestore`.
`iterator.stats()` reports the counts of the files' bad-input policy (`stats=`, e.g.
`builders.load(...)[1]["stats"]`) plus the pipeline's own: `examples_read`, `examples_batched`,
`batches`, `truncated_prompts`, `truncated_responses`, `dropped_long_prompt`,
`dropped_long_response`, `dropped_remainder`.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import grain
import numpy as np

from alignment.data import batching
from alignment.data import formats


def _canonical(example: Mapping[str, Any]) -> dict:
  """A record as stored (TFDS gives `bytes` texts and numpy scores) -> `str` texts, float scores.

  Message lists (conversational records) pass through unchanged."""
  text = lambda x: x.decode("utf-8") if isinstance(x, bytes) else x
  record = {"prompt": text(example["prompt"]),
            "responses": [text(r) for r in example["responses"]],
            "scores": [float(s) for s in example["scores"]]}
  if "ref_logps" in example:
    record["ref_logps"] = [float(x) for x in example["ref_logps"]]
  return record


def _tokenize(example, *, tokenizer, config, render):
  return batching.tokenize_record(_canonical(example), tokenizer, config, render=render)


def preference_dataset(
    source: Sequence[Mapping[str, Any]],
    *,
    tokenizer,
    batch_size: int,
    config: batching.BatchConfig = batching.BatchConfig(),
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: Optional[int] = None,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
    drop_remainder: bool = True,
    collate_fn: Callable[..., dict] = batching.collate,
    stats: Optional[Mapping[str, Any]] = None,
    read_options: Optional[grain.ReadOptions] = None,
    render: Optional[batching.Render] = None,
) -> grain.IterDataset:
  """A grain dataset of batches in the layout of docs/interfaces.md#batches.

  Args:
    source: random-access canonical records (`len`, `[i]`): a list, or a split from
      `builders.load`.
    tokenizer: as in docs/interfaces.md#tokenizers.
    batch_size: B, examples per batch on this process.
    config: lengths, list size and length policy; fix all sizes for static shapes.
    seed: shuffle seed (the same on every process: each shuffles its own shard).
    shuffle: shuffle within the shard, anew each epoch.
    num_epochs: passes over the shard; None repeats forever.
    process_index, process_count: this process's shard; default `jax.process_index()` and
      `jax.process_count()`.
    drop_remainder: drop the last incomplete batch (counted as `dropped_remainder`) or yield it
      smaller.
    collate_fn: `batching.collate`, or e.g. `functools.partial(batching.pack, num_rows=N)`.
    stats: bad-input counts of the source (`DataStats.to_json()`), added to `iterator.stats()`.
    read_options: grain reader threads and prefetch; default 1 thread, 64 examples ahead.
    render: the chat template of conversational records (`batching.render_conversation`).
  Returns:
    A `grain.IterDataset`; its iterators have `get_state`, `set_state` and `stats`.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, process_count={process_count})")
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size}; expected >= 1")
  if len(source) < process_count:
    raise ValueError(f"{len(source)} records cannot be shared by {process_count} processes")
  ds = grain.MapDataset.source(source)[process_index::process_count]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)
  ds = ds.map(functools.partial(_tokenize, tokenizer=tokenizer, config=config, render=render))
  ds = ds.to_iter_dataset(
      read_options or grain.ReadOptions(num_threads=1, prefetch_buffer_size=64))
  collate = functools.partial(collate_fn, config=config, pad_id=tokenizer.pad_id)
  base = formats.DataStats.from_json(stats).counts if stats else collections.Counter()
  return _BatchDataset(ds, batch_size=batch_size, collate=collate,
                       drop_remainder=drop_remainder, base_counts=base)


class _BatchDataset(grain.IterDataset):
  """Drops the examples the length policy rejected, counts events, collates B examples."""

  def __init__(self, parent: grain.IterDataset, *, batch_size, collate, drop_remainder,
               base_counts):
    super().__init__(parent)
    self._options = dict(batch_size=batch_size, collate=collate, drop_remainder=drop_remainder,
                         base_counts=base_counts)

  def __iter__(self) -> "_BatchIterator":
    return _BatchIterator(self._parent.__iter__(), **self._options)


class _BatchIterator(grain.DatasetIterator):
  """Iterator of `_BatchDataset`; its state is the parent's plus the counts."""

  def __init__(self, parent: grain.DatasetIterator, *, batch_size, collate, drop_remainder,
               base_counts):
    super().__init__(parent)
    self._batch_size, self._collate = batch_size, collate
    self._drop_remainder, self._base_counts = drop_remainder, base_counts
    self._counts = collections.Counter()

  def __next__(self) -> dict[str, np.ndarray]:
    examples = []
    while len(examples) < self._batch_size:
      try:
        example, events = next(self._parent)
      except StopIteration:
        if examples and not self._drop_remainder:
          break
        self._counts["dropped_remainder"] += len(examples)
        raise
      self._counts["examples_read"] += 1
      self._counts.update(events)
      if example is not None:
        examples.append(example)
    self._counts["batches"] += 1
    self._counts["examples_batched"] += len(examples)
    return self._collate(examples)

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._parent.get_state(), "counts": dict(self._counts)}

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._counts = collections.Counter(state["counts"])

  def stats(self) -> dict[str, int]:
    """Counts of the source's bad-input policy plus this iterator's so far."""
    return dict(self._base_counts + self._counts)
