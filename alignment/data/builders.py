"""TFDS builders: local preference files -> canonical records stored as ArrayRecord.

`tensorflow_datasets` 4.9.10 prepares `file_format="array_record"` datasets without TensorFlow
(its example serialiser and the `array_record` writer are TF-free; checked here with TF absent),
so this is a plain `tfds.core.GeneratorBasedBuilder`: the result is a standard TFDS directory

    {data_dir}/preference_files/{name}/1.0.0/
        preference_files-{split}.array_record-00000-of-0000N
        dataset_info.json, features.json, metadata.json

readable by `tfds.builder_from_directory(...).as_data_source(split)` (random access, what grain
needs) and by TFDS's own `tf.data` path where TensorFlow is installed. Each example is a
canonical record (`alignment.data.formats`): `prompt` Text, `responses` Sequence(Text), `scores`
Sequence(float32). `metadata.json` holds, per split, the bad-input counts (`DataStats`) and the
longest list, so a pipeline can size K and report what the policy did without re-reading files.
TFDS writes examples in the order of a hash of their keys (deterministic), not file order.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from alignment.data import formats

_VERSION = "1.0.0"


def _paths(paths) -> list:
  return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


class PreferenceFiles(tfds.core.GeneratorBasedBuilder):
  """Local preference files in one layout of `alignment.data.formats` -> ArrayRecord.

  Each named dataset is a TFDS builder config, so several live side by side in one `data_dir`.
  """

  VERSION = tfds.core.Version(_VERSION)
  RELEASE_NOTES = {_VERSION: "Canonical records: prompt, responses, scores."}
  # TFDS 4.9.10 finds a builder's source through `importlib_resources`, which is not installed
  # here (nor a TFDS dependency); naming the file directly avoids that lookup.
  code_path = epath.Path(__file__)

  def __init__(
      self,
      *,
      split_files: Mapping[str, str | os.PathLike | Sequence[str | os.PathLike]],
      layout: str,
      name: str = "default",
      fields: formats.Fields = formats.Fields(),
      policy: formats.DataPolicy = formats.DataPolicy(),
      data_dir: str | os.PathLike,
  ):
    """Args:
      split_files: split name -> one path or a list of `.jsonl`/`.parquet` paths.
      layout: one of `formats.LAYOUTS`.
      name: the dataset's name (its builder config).
      fields: field names of the layout.
      policy: the bad-input policy applied while writing.
      data_dir: root directory of the TFDS datasets.
    """
    if layout not in formats.LAYOUTS:
      raise ValueError(f"unknown layout {layout!r}; expected one of {formats.LAYOUTS}")
    for split, paths in split_files.items():
      missing = [os.fspath(p) for p in _paths(paths) if not os.path.exists(p)]
      if missing:
        raise FileNotFoundError(f"split {split!r}: no such file {missing}")
    self._split_files = dict(split_files)
    self._layout, self._fields, self._policy = layout, fields, policy
    config = tfds.core.BuilderConfig(
        name=name, description=f"{layout} files: {sorted(self._split_files)}")
    super().__init__(data_dir=data_dir, config=config, file_format="array_record")

  def source_config(self) -> dict:
    """What the dataset is built from (JSON); `build` will not reuse one built otherwise."""
    return {"layout": self._layout, "fields": dataclasses.asdict(self._fields),
            "policy": dataclasses.asdict(self._policy),
            "split_files": {split: [os.fspath(p) for p in _paths(paths)]
                            for split, paths in sorted(self._split_files.items())}}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Preference records (prompt, K responses, scores; higher is better).",
        features=tfds.features.FeaturesDict({
            "prompt": tfds.features.Text(),
            "responses": tfds.features.Sequence(tfds.features.Text()),
            "scores": tfds.features.Sequence(np.float32),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Local files only; nothing is downloaded.
    self.info.metadata["config"] = self.source_config()
    return {split: self._generate_examples(split, paths)
            for split, paths in self._split_files.items()}

  def _generate_examples(self, split, paths):
    stats = formats.DataStats()
    longest = 0
    for i, record in enumerate(formats.read_records(
        paths, layout=self._layout, fields=self._fields, policy=self._policy, stats=stats)):
      longest = max(longest, len(record["responses"]))
      yield f"{i:012d}", record
    if not stats.counts["kept_records"]:
      raise ValueError(f"split {split!r}: no valid record in {paths}; counts {dict(stats.counts)}")
    self.info.metadata[split] = {"stats": stats.to_json(), "max_list_size": longest}


def build(
    split_files: Mapping[str, str | os.PathLike | Sequence[str | os.PathLike]],
    *,
    layout: str,
    data_dir: str | os.PathLike,
    name: str = "default",
    fields: formats.Fields = formats.Fields(),
    policy: formats.DataPolicy = formats.DataPolicy(),
) -> str:
  """Prepares the dataset (once; an existing one is reused) and returns its directory."""
  builder = PreferenceFiles(split_files=split_files, layout=layout, name=name, fields=fields,
                            policy=policy, data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(beam_runner=None))
  built_from = json.loads(json.dumps(builder.info.metadata.get("config")))
  if built_from != json.loads(json.dumps(builder.source_config())):
    raise ValueError(f"{builder.data_dir} was built from {built_from}, not from "
                     f"{builder.source_config()}; use another name or data_dir")
  return os.fspath(builder.data_dir)


def load(dataset_dir: str | os.PathLike, split: str) -> tuple[object, dict]:
  """Opens a prepared split for random access.

  Args:
    dataset_dir: the directory `build` returned.
    split: a split name, e.g. `"train"`.
  Returns:
    `(source, metadata)`: a TFDS `ArrayRecordDataSource` (`len`, `[i]` -> record with `bytes`
    texts; `alignment.data.pipeline` decodes them) and the split's metadata
    (`stats`: `DataStats.to_json()`, `max_list_size`).
  """
  builder = tfds.builder_from_directory(os.fspath(dataset_dir))
  if split not in builder.info.splits:
    raise KeyError(f"no split {split!r} in {dataset_dir}; splits: {sorted(builder.info.splits)}")
  return builder.as_data_source(split), dict(builder.info.metadata[split])

