"""Tests of alignment.data.builders: local files -> TFDS ArrayRecord datasets and back."""

import glob
import os

from array_record.python import array_record_module
import pytest

from alignment.data import builders
from alignment.data import formats
from alignment.data import pipeline

DATA = os.path.join(os.path.dirname(__file__), "testdata")


def path(name):
  return os.path.join(DATA, name)


def _key(record):
  return (record["prompt"], tuple(record["responses"]), tuple(record["scores"]))


def _stored(dataset_dir, split):
  source, metadata = builders.load(dataset_dir, split)
  decode = pipeline._canonical  # pylint: disable=protected-access
  return [decode(source[i]) for i in range(len(source))], metadata


def test_pairwise_files_round_trip_through_array_record(tmp_path):
  dataset_dir = builders.build({"train": path("pairwise.parquet"),
                                "test": [path("pairwise.jsonl"), path("pairwise.jsonl")]},
                               layout="pairwise", data_dir=tmp_path, name="pairs")
  assert dataset_dir == os.path.join(tmp_path, "preference_files", "pairs", "1.0.0")
  expected = list(formats.read_records(path("pairwise.jsonl"), layout="pairwise"))
  train, metadata = _stored(dataset_dir, "train")
  # Same records; TFDS stores them in the order of a hash of their keys.
  assert sorted(map(_key, train)) == sorted(map(_key, expected))
  assert metadata == {"max_list_size": 2, "stats": {
      "counts": {"read_records": 4, "kept_records": 4}, "locations": {}}}
  test, _ = _stored(dataset_dir, "test")
  assert sorted(map(_key, test)) == sorted(map(_key, expected * 2))
  # The files are plain ArrayRecord files, one per split here.
  files = sorted(glob.glob(os.path.join(dataset_dir, "*.array_record-*")))
  assert [os.path.basename(f) for f in files] == [
      "preference_files-test.array_record-00000-of-00001",
      "preference_files-train.array_record-00000-of-00001"]
  reader = array_record_module.ArrayRecordReader(files[1])
  assert reader.num_records() == 4
  reader.close()


def test_listwise_layouts_store_k_and_policy_counts(tmp_path):
  dataset_dir = builders.build({"train": path("ultrafeedback.jsonl")}, layout="ultrafeedback",
                               data_dir=tmp_path, name="uf",
                               fields=formats.Fields(rating="fine-grained_score"))
  records, metadata = _stored(dataset_dir, "train")
  stats = formats.DataStats()
  expected = list(formats.read_records(path("ultrafeedback.jsonl"), layout="ultrafeedback",
                                       fields=formats.Fields(rating="fine-grained_score"),
                                       stats=stats))
  assert sorted(map(_key, records)) == sorted(map(_key, expected))
  assert metadata["max_list_size"] == 4
  assert formats.DataStats.from_json(metadata["stats"]) == stats
  assert metadata["stats"]["counts"]["nonfinite_score"] == 1


def test_bad_rows_are_counted_with_skip_and_named_with_raise(tmp_path):
  skip = formats.DataPolicy(on_error="skip")
  dataset_dir = builders.build({"train": path("pairwise_bad.jsonl")}, layout="pairwise",
                               data_dir=tmp_path, name="bad", policy=skip)
  records, metadata = _stored(dataset_dir, "train")
  assert sorted(r["prompt"] for r in records) == ["ok 1", "ok 2"]
  counts = metadata["stats"]["counts"]
  assert (counts["read_records"], counts["kept_records"], counts["malformed"]) == (9, 2, 4)
  assert metadata["stats"]["locations"]["malformed"][0] == path("pairwise_bad.jsonl") + ":line 2"
  with pytest.raises(Exception, match="pairwise_bad.jsonl:line 2: invalid JSON"):
    builders.build({"train": path("pairwise_bad.jsonl")}, layout="pairwise",
                   data_dir=tmp_path, name="bad_raise")


def test_reuse_only_what_was_built_from_the_same_files_and_policy(tmp_path):
  kwargs = dict(layout="unpaired", data_dir=tmp_path, name="kto")
  first = builders.build({"train": path("unpaired.jsonl")}, **kwargs)
  assert builders.build({"train": path("unpaired.jsonl")}, **kwargs) == first
  with pytest.raises(ValueError, match="was built from"):
    builders.build({"train": path("unpaired.jsonl")}, **kwargs,
                   policy=formats.DataPolicy(empty_response="keep"))
  records, _ = _stored(first, "train")
  assert sorted(map(_key, records)) == sorted(map(_key, formats.read_records(
      path("unpaired.jsonl"), layout="unpaired")))


def test_missing_files_empty_splits_and_unknown_splits_are_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="split 'train': no such file"):
    builders.build({"train": path("nope.jsonl")}, layout="pairwise", data_dir=tmp_path)
  with pytest.raises(ValueError, match="unknown layout"):
    builders.build({"train": path("pairwise.jsonl")}, layout="pairs", data_dir=tmp_path)
  empty = tmp_path / "empty.jsonl"
  empty.write_text('{"prompt": "p", "chosen": "a", "rejected": "a"}\n')
  with pytest.raises(Exception, match="split 'train': no valid record"):
    builders.build({"train": str(empty)}, layout="pairwise", data_dir=tmp_path, name="empty")
  dataset_dir = builders.build({"train": path("pairwise.jsonl")}, layout="pairwise",
                               data_dir=tmp_path, name="one")
  with pytest.raises(KeyError, match="no split 'validation'"):
    builders.load(dataset_dir, "validation")
