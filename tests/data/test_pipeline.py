"""Tests of alignment.data.pipeline: determinism, checkpointed state, sharding, counts."""

import collections
import json
import os
import string

import numpy as np
import pytest

from alignment.data import batching
from alignment.data import builders
from alignment.data import formats
from alignment.data import pipeline
from alignment.data.tokenizers import CharTokenizer

DATA = os.path.join(os.path.dirname(__file__), "testdata")
TOKENIZER = CharTokenizer(string.ascii_letters + string.digits + string.punctuation + " \n")
CONFIG = batching.BatchConfig(max_prompt_tokens=8, max_response_tokens=6, list_size=3)


def _records(n):
  """n distinct records with K = 1..3 responses and distinct scores."""
  return [{"prompt": f"p{i}", "responses": [f"r{i}.{k}" for k in range(1 + i % 3)],
           "scores": [float(k) for k in range(1 + i % 3)]} for i in range(n)]


def _dataset(source, **kwargs):
  kwargs = dict(tokenizer=TOKENIZER, batch_size=4, config=CONFIG, seed=3, process_index=0,
                process_count=1) | kwargs
  return pipeline.preference_dataset(source, **kwargs)


def _decode(batch):
  """The records in a batch, back as (prompt, responses, labels) tuples."""
  out = []
  for b in range(batch["prompt_tokens"].shape[0]):
    k = int(batch["where"][b].sum())
    assert batch["where"][b, :k].all()
    out.append((TOKENIZER.decode(batch["prompt_tokens"][b]),
                tuple(TOKENIZER.decode(batch["response_tokens"][b, j]) for j in range(k)),
                tuple(batch["labels"][b, :k].tolist())))
  return out


def _key(record):
  return record["prompt"], tuple(record["responses"]), tuple(record["scores"])


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batches_have_the_static_layout():
  batch = next(iter(_dataset(_records(10))))
  shapes = {k: v.shape for k, v in batch.items()}
  assert shapes == {"prompt_tokens": (4, 8), "prompt_lengths": (4,),
                    "response_tokens": (4, 3, 6), "response_lengths": (4, 3),
                    "tokens": (4, 3, 14), "segment_ids": (4, 3, 14), "positions": (4, 3, 14),
                    "completion_mask": (4, 3, 14), "labels": (4, 3), "where": (4, 3)}
  # BOS starts each prompt and EOS ends each response (CharTokenizer: BOS 1, EOS 2).
  assert (batch["prompt_tokens"][:, 0] == 1).all()
  lengths = batch["response_lengths"]
  ends = np.take_along_axis(batch["response_tokens"], np.maximum(lengths - 1, 0)[..., None], -1)
  assert (ends[..., 0][batch["where"]] == 2).all()


def test_same_seed_same_batches_other_seed_other_order():
  records = _records(12)
  run = lambda seed: _take(iter(_dataset(records, seed=seed)), 6)  # two epochs
  _assert_same(run(3), run(3))
  order = lambda batches: [r[0] for b in batches for r in _decode(b)]
  assert order(run(3)) != order(run(4))
  # Each epoch is a new permutation of all 12 records.
  epochs = order(run(3))
  assert sorted(epochs[:12]) == sorted(epochs[12:]) == sorted(r["prompt"] for r in records)
  assert epochs[:12] != epochs[12:]


@pytest.mark.parametrize("stop", [1, 4, 5])
def test_restored_state_continues_exactly(stop):
  # 10 records, batch 4: epochs end mid-batch; stop 1 (mid-epoch), 4, 5 (second/third epoch).
  records = _records(10)
  uninterrupted = _take(iter(_dataset(records)), 8)
  first = iter(_dataset(records))
  _take(first, stop)
  state = json.loads(json.dumps(first.get_state()))  # what a checkpoint stores
  resumed = iter(_dataset(records))  # a fresh process: new dataset, new iterator
  resumed.set_state(state)
  _assert_same(_take(resumed, 8 - stop), uninterrupted[stop:])
  again = iter(_dataset(records))
  _take(again, 8)
  assert resumed.stats() == again.stats()
  assert resumed.stats()["examples_batched"] == 32


@pytest.mark.parametrize("shuffle", [False, True])
def test_process_shards_are_disjoint_and_cover_the_data(shuffle):
  records = _records(11)
  shards = []
  for index in range(3):
    ds = _dataset(records, process_index=index, process_count=3, num_epochs=1,
                  drop_remainder=False, shuffle=shuffle, batch_size=2)
    shards.append([r for batch in ds for r in _decode(batch)])
  assert [len(s) for s in shards] == [4, 4, 3]
  seen = [set(s) for s in shards]
  assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
  expected = {(r["prompt"], tuple(r["responses"]), tuple(r["scores"])) for r in records}
  assert seen[0] | seen[1] | seen[2] == expected


def test_default_shard_is_the_jax_process():
  batches = list(pipeline.preference_dataset(_records(8), tokenizer=TOKENIZER, batch_size=4,
                                             config=CONFIG, num_epochs=1))
  assert len(batches) == 2  # jax.process_count() == 1: this process reads everything
  with pytest.raises(ValueError, match=r"process_index=3 not in \[0, process_count=3\)"):
    _dataset(_records(8), process_index=3, process_count=3)


def test_built_files_reach_the_batches_without_loss(tmp_path):
  policy = formats.DataPolicy(on_error="skip")
  dataset_dir = builders.build({"train": [os.path.join(DATA, "listwise.jsonl"),
                                          os.path.join(DATA, "pairwise_bad.jsonl")]},
                               layout="listwise", data_dir=tmp_path, name="mixed",
                               policy=policy)
  source, metadata = builders.load(dataset_dir, "train")
  config = batching.BatchConfig(max_prompt_tokens=16, max_response_tokens=8,
                                list_size=metadata["max_list_size"])
  ds = _dataset(source, config=config, num_epochs=1, drop_remainder=False,
                stats=metadata["stats"], batch_size=3)
  iterator = iter(ds)
  got = [r for batch in iterator for r in _decode(batch)]
  # pairwise_bad.jsonl is not listwise: every row is malformed, every listwise record arrives.
  stats = formats.DataStats()
  expected = list(formats.read_records(os.path.join(DATA, "listwise.jsonl"), layout="listwise",
                                       stats=stats))
  assert collections.Counter(got) == collections.Counter(map(_key, expected))
  counts = iterator.stats()
  assert counts["malformed"] == 9 and counts["kept_records"] == len(expected) == 4
  assert counts["examples_read"] == counts["examples_batched"] == 4
  assert counts["batches"] == 2


def test_length_policy_counts_and_full_batches():
  records = [{"prompt": "x" * n, "responses": ["a", "b" * m], "scores": [1.0, 0.0]}
             for n, m in [(3, 1), (12, 1), (3, 9), (4, 2), (2, 1), (20, 20)]]
  # Limits 8 (prompt, BOS included) and 6 (response, EOS included): records 1 and 5 have long
  # prompts, records 2 and 5 long responses.
  drop = batching.BatchConfig(max_prompt_tokens=8, max_response_tokens=6, list_size=2,
                              prompt_overflow="drop", response_overflow="drop")
  iterator = iter(_dataset(records, config=drop, num_epochs=1, shuffle=False, batch_size=2,
                           drop_remainder=False))
  prompts = [r[0] for batch in iterator for r in _decode(batch)]
  assert prompts == ["xxx", "xxxx", "xx"]
  # Record 5 is dropped for its prompt, checked first.
  assert iterator.stats() == {"examples_read": 6, "dropped_long_prompt": 2,
                              "dropped_long_response": 1, "batches": 2, "examples_batched": 3}
  iterator = iter(_dataset(records, num_epochs=1, shuffle=False, batch_size=4,
                           config=batching.BatchConfig(max_prompt_tokens=8,
                                                       max_response_tokens=6, list_size=2)))
  batch = next(iterator)
  assert batch["prompt_lengths"].tolist() == [4, 8, 4, 5]
  with pytest.raises(StopIteration):
    next(iterator)
  # Default truncation: the prompts of 12 and 20 characters and the responses of 9 and 20 are
  # cut; the last two examples are the incomplete remainder.
  assert iterator.stats() == {"examples_read": 6, "truncated_prompts": 2,
                              "truncated_responses": 2, "batches": 1, "examples_batched": 4,
                              "dropped_remainder": 2}


def test_orbax_checkpoint_of_the_iterator_state(tmp_path):
  import grain  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  records = _records(10)
  uninterrupted = _take(iter(_dataset(records)), 5)
  iterator = iter(_dataset(records))
  _take(iterator, 3)
  handlers = {"data": grain.checkpoint.CheckpointHandler()}
  with ocp.CheckpointManager(tmp_path, item_handlers=handlers) as manager:
    manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
  resumed = iter(_dataset(records))
  with ocp.CheckpointManager(tmp_path, item_handlers=handlers) as manager:
    manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  _assert_same(_take(resumed, 2), uninterrupted[3:])
  assert resumed.stats()["batches"] == 5
