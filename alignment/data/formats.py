"""Local preference files (JSONL, Parquet, `datasets` folders) in common layouts -> records.

Every layout is normalised into one canonical record, higher scores better, K = len(responses):

    text:            {"prompt": str, "responses": list[str], "scores": list[float]}
    conversational:  {"prompt": list[message], "responses": list[list[message]],
                      "scores": list[float]}                 message = {"role": str, "content": str}

A conversational record keeps its messages: the prompt is the conversation before the responses
(it ends with the last user turn) and each response is the list of messages that answers it
(usually one assistant message); the chat template renders them at tokenization
(`batching.tokenize_record(..., render=...)`). Layouts (`layout=`), with their default field
names (`Fields`), are tabled with one example row each in `docs/data.md`:

- `"pairwise"`:          `prompt`, `chosen`, `rejected` strings          -> scores `[1, 0]`.
- `"pairwise_implicit"`: `chosen`, `rejected` strings, no prompt: the prompt is their shared
                         prefix by TRL's `extract_prompt` rule (`extract_prompt`) -> `[1, 0]`.
- `"transcript"`:        HH-RLHF transcripts `chosen`, `rejected` only; the prompt is their
                         common prefix up to and including its last `"\\n\\nAssistant:"`
                         -> `[1, 0]`.
- `"conversational"`:    `chosen`, `rejected` message lists with a `prompt` message list
                         (explicit prompt) or without one (implicit prompt: their shared leading
                         messages, `extract_prompt`; a string `prompt` beside them, as in
                         `HuggingFaceH4/ultrafeedback_binarized`, is ignored, as TRL does)
                         -> `[1, 0]`.
- `"listwise"`:          `prompt`, `responses` (list), `scores` (list of numbers, same length);
                         texts, or a prompt message list with message-list responses. The
                         canonical record itself is in this layout.
- `"ultrafeedback"`:     `instruction` (or `prompt`), `completions`: list of objects with
                         `response` and a rating (`overall_score` by default;
                         `Fields(rating="fine-grained_score")`), as in `openbmb/UltraFeedback`.
- `"unpaired"`:          `prompt`, `completion` strings, `label` (KTO data) -> K = 1, score = label.
- `"unpaired_conversational"`: the same with `prompt` and `completion` message lists.

`layout="auto"` (or `detect_layout`) picks the layout from the first row's keys and value types.
List data meets a pairwise objective through `binarize` (rules in `BINARIZE_RULES`).

Bad input is never dropped silently. `DataPolicy` states what happens to each kind
of problem and `DataStats` counts every occurrence (under the name in brackets) and every action,
with the first few locations (`file:line N` for JSONL, 1-based; `file:row N` for Parquet and
`datasets` folders, 0-based). The checks, in order, with the `DataPolicy` field of the same name
(default action first); a message list is empty when no message has non-blank content:

- unreadable JSON, missing field, wrong type [`malformed`]; `on_error`: raise | skip.
- prompt empty or whitespace only [`empty_prompt`]: drop_record | keep | raise.
- score NaN, +-inf or null [`nonfinite_score`]: drop_response | drop_record | keep | raise.
- response empty or whitespace only [`empty_response`]: drop_response | drop_record | keep | raise.
- response repeated in a list [`duplicate_response`]: drop_response (the first occurrence
  stays) | drop_record | keep | raise.
- fewer than 2 responses left, except unpaired data [`single_response`]: drop | keep | raise.
- every score tied, K >= 2 [`all_tied`]: drop | keep | raise.

Partial ties are kept (tied labels form no pair in the objectives) and counted as
`records_with_ties`. `read_records = kept_records + dropped_records + malformed` always holds, and a
record that passes every check comes out unchanged.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import math
import numbers
import os
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np

LAYOUTS = ("pairwise", "pairwise_implicit", "transcript", "conversational", "listwise",
           "ultrafeedback", "unpaired", "unpaired_conversational")
AUTO = "auto"
BINARIZE_RULES = ("best_vs_worst", "best_vs_random", "all_pairs")

_RESPONSE_ACTIONS = ("drop_response", "drop_record", "keep", "raise")
_RECORD_ACTIONS = ("drop", "keep", "raise")
_DETECT_ROWS = 10  # rows looked at for the first object row when detecting a layout


class FormatError(ValueError):
  """A record that cannot be read, or that a `DataPolicy` says to reject; names file and line."""


@dataclasses.dataclass(frozen=True)
class Fields:
  """Field names of the input layouts (see the module docstring for which layout uses which).

  `prompt` lists alternatives: the first one present in a row is used.
  """

  prompt: tuple[str, ...] = ("prompt", "instruction")
  chosen: str = "chosen"
  rejected: str = "rejected"
  responses: str = "responses"
  scores: str = "scores"
  completions: str = "completions"
  response: str = "response"
  rating: str = "overall_score"
  completion: str = "completion"
  label: str = "label"
  assistant_marker: str = "\n\nAssistant:"

  def __post_init__(self):
    if isinstance(self.prompt, str):
      object.__setattr__(self, "prompt", (self.prompt,))


@dataclasses.dataclass(frozen=True)
class DataPolicy:
  """What to do with each kind of bad input (table in the module docstring)."""

  on_error: str = "raise"
  empty_prompt: str = "drop_record"
  nonfinite_score: str = "drop_response"
  empty_response: str = "drop_response"
  duplicate_response: str = "drop_response"
  single_response: str = "drop"
  all_tied: str = "drop"

  def __post_init__(self):
    allowed = {
        "on_error": ("raise", "skip"),
        "empty_prompt": ("drop_record", "keep", "raise"),
        "nonfinite_score": _RESPONSE_ACTIONS,
        "empty_response": _RESPONSE_ACTIONS,
        "duplicate_response": _RESPONSE_ACTIONS,
        "single_response": _RECORD_ACTIONS,
        "all_tied": _RECORD_ACTIONS,
    }
    for name, choices in allowed.items():
      if getattr(self, name) not in choices:
        raise ValueError(
            f"DataPolicy.{name}={getattr(self, name)!r}; expected one of {choices}")


@dataclasses.dataclass
class DataStats:
  """Counts of records, problems and actions, with up to `max_locations` locations per kind."""

  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  locations: dict = dataclasses.field(default_factory=dict)
  max_locations: int = 5

  def add(self, kind: str, location: Optional[str] = None, n: int = 1) -> None:
    self.counts[kind] += n
    if location is not None:
      seen = self.locations.setdefault(kind, [])
      if len(seen) < self.max_locations:
        seen.append(location)

  def update(self, other: "DataStats") -> None:
    for kind, n in other.counts.items():
      self.counts[kind] += n
    for kind, where in other.locations.items():
      seen = self.locations.setdefault(kind, [])
      seen.extend(where[: self.max_locations - len(seen)])

  def to_json(self) -> dict:
    return {"counts": dict(self.counts),
            "locations": {k: list(v) for k, v in self.locations.items()}}

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> "DataStats":
    return cls(collections.Counter(data.get("counts", {})),
               {k: list(v) for k, v in data.get("locations", {}).items()})


# ---------------------------------------------------------------------------------------- files


def read_rows(path: str | os.PathLike, *, split: Optional[str] = None
              ) -> Iterator[tuple[str, Any]]:
  """Yields `(location, row)` for each row of a file or a Hugging Face `datasets` folder.

  Files: `.jsonl`/`.json` (an object per line) and `.parquet`. Folders: a `Dataset` saved with
  `save_to_disk` (`state.json`, `dataset_info.json`, `data-*.arrow` Arrow IPC streams; read with
  pyarrow), or a `DatasetDict` (`dataset_dict.json` and one such folder per split), whose split is
  named as `split=` or as a `path:split` suffix.

  A JSONL line that is not valid JSON yields a `FormatError` as its row, so that a caller decides
  whether to raise or skip. Blank lines are not rows.
  """
  path, split = _split_suffix(os.fspath(path), split)
  if os.path.isdir(path):
    yield from _dataset_rows(path, split)
  elif split is not None:
    raise ValueError(f"{path}: split {split!r} named for a file; splits are folders of a "
                     "DatasetDict saved with save_to_disk")
  elif path.endswith((".jsonl", ".json")):
    yield from _jsonl_rows(path)
  elif path.endswith(".parquet"):
    yield from _parquet_rows(path)
  else:
    raise ValueError(f"{path}: unknown file type; expected .jsonl, .json, .parquet or a datasets "
                     "folder saved with save_to_disk")


def _split_suffix(path: str, split: Optional[str]) -> tuple[str, Optional[str]]:
  """`("dir", "test")` for `"dir:test"` when `dir` is a folder and `path` itself does not exist."""
  if split is None and not os.path.exists(path) and ":" in path:
    base, suffix = path.rsplit(":", 1)
    if os.path.isdir(base):
      return base, suffix
  return path, split


def _jsonl_rows(path: str) -> Iterator[tuple[str, Any]]:
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      location = f"{path}:line {number}"
      try:
        yield location, json.loads(line)
      except json.JSONDecodeError as e:
        yield location, FormatError(f"{location}: invalid JSON ({e.msg} at column {e.colno})")


def _parquet_rows(path: str) -> Iterator[tuple[str, Any]]:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  index = 0
  for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
    for row in batch.to_pylist():
      yield f"{path}:row {index}", row
      index += 1


def _dataset_rows(path: str, split: Optional[str]) -> Iterator[tuple[str, Any]]:
  """Rows of a `save_to_disk` folder: its `data-*.arrow` stream files in `state.json` order."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  splits_file = os.path.join(path, "dataset_dict.json")
  if os.path.exists(splits_file):
    with open(splits_file, encoding="utf-8") as f:
      splits = json.load(f)["splits"]
    if split not in splits:
      raise ValueError(f"{path} is a DatasetDict with splits {splits}; name one as "
                       f"{path}:SPLIT or split=..." + (f" (got {split!r})" if split else ""))
    path = os.path.join(path, split)
  elif split is not None:
    raise ValueError(f"{path}: split {split!r} named, but the folder has no dataset_dict.json")
  state_file = os.path.join(path, "state.json")
  if not os.path.exists(state_file):
    raise ValueError(f"{path}: not a datasets folder saved with save_to_disk (no state.json)")
  with open(state_file, encoding="utf-8") as f:
    names = [entry["filename"] for entry in json.load(f)["_data_files"]]
  index = 0
  for name in names:
    with pa.OSFile(os.path.join(path, name), "rb") as source:
      for batch in pa.ipc.open_stream(source):
        for row in batch.to_pylist():
          yield f"{path}:row {index}", row
          index += 1


def read_records(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    layout: str,
    fields: Fields = Fields(),
    policy: DataPolicy = DataPolicy(),
    stats: Optional[DataStats] = None,
    split: Optional[str] = None,
) -> Iterator[dict]:
  """Canonical records from local files or `datasets` folders, in file then row order.

  Args:
    paths: one path or a list of paths (see `read_rows`; `folder:split` names a split).
    layout: one of `LAYOUTS`, or `"auto"`: detected per path by `detect_layout`.
    fields: field names of the layout.
    policy: the bad-input policy.
    stats: a `DataStats` that receives the counts (pass one in to read them afterwards).
    split: the split of `DatasetDict` folders.
  Yields:
    Canonical records (module docstring).
  """
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  for path in paths:
    yield from canonicalize(read_rows(path, split=split), layout=layout, fields=fields,
                            policy=policy, stats=stats)


def canonicalize(
    rows: Iterable[tuple[str, Any]] | Iterable[Mapping[str, Any]],
    *,
    layout: str,
    fields: Fields = Fields(),
    policy: DataPolicy = DataPolicy(),
    stats: Optional[DataStats] = None,
) -> Iterator[dict]:
  """Canonical records from rows in `layout`, applying `policy` and counting into `stats`.

  `rows` are `(location, row)` pairs as `read_rows` yields them, or bare mappings (in memory;
  their location is `record N`, 0-based). A row that is an exception is malformed. `layout="auto"`
  detects the layout from the first rows (`detect_layout`).
  """
  if layout == AUTO:
    rows = iter(rows)
    head = list(itertools.islice(rows, _DETECT_ROWS))
    layout, _ = detect_layout(head, fields=fields)
    rows = itertools.chain(head, rows)
  if layout not in LAYOUTS:
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS} or {AUTO!r}")
  stats = DataStats() if stats is None else stats
  for index, item in enumerate(rows):
    location, row = item if isinstance(item, tuple) else (f"record {index}", item)
    stats.add("read_records")
    try:
      if isinstance(row, Exception):
        raise row
      if not isinstance(row, Mapping):
        raise FormatError(f"{location}: expected an object, got {type(row).__name__}")
      prompt, responses, scores = _PARSERS[layout](row, fields, location)
    except FormatError:
      if policy.on_error == "raise":
        raise
      stats.add("malformed", location)
      continue
    record = apply_policy(prompt, responses, scores, policy=policy, stats=stats,
                          location=location, expect_list=not layout.startswith("unpaired"))
    if record is None:
      stats.add("dropped_records")
    else:
      stats.add("kept_records")
      yield record


# ------------------------------------------------------------------------------------ detection


def detect_layout(
    source: str | os.PathLike | Iterable[tuple[str, Any]] | Iterable[Mapping[str, Any]],
    *,
    fields: Fields = Fields(),
    split: Optional[str] = None,
) -> tuple[str, str]:
  """The layout of a file, folder or rows, from the first object row's keys and value types.

  Exactly one layout must match (rules in `docs/data.md#detection`): `pairwise`
  (`prompt`, `chosen`, `rejected` strings), `pairwise_implicit` / `transcript` (`chosen`,
  `rejected` strings without a prompt: transcript when `chosen` holds `Fields.assistant_marker`),
  `conversational` (`chosen`, `rejected` message lists), `listwise` (`responses`, `scores`),
  `ultrafeedback` (`completions` list of objects), `unpaired` / `unpaired_conversational`
  (`completion` string / message list, `label`).

  Args:
    source: a path as in `read_rows`, or rows as in `canonicalize`.
    fields: field names of the layouts.
    split: the split of a `DatasetDict` folder.
  Returns:
    `(layout, line)`, the line for the caller to log, e.g. `"layout: conversational (keys
    chosen, rejected, prompt as message lists)"`.
  Raises:
    FormatError: no row, no layout or several layouts match; names the file, the first row's
      keys and the layouts with their keys.
  """
  if isinstance(source, (str, os.PathLike)):
    name, rows = os.fspath(source), read_rows(source, split=split)
  else:
    name, rows = "rows", source
  row, location = None, name
  for index, item in enumerate(itertools.islice(rows, _DETECT_ROWS)):
    location, value = item if isinstance(item, tuple) else (f"record {index}", item)
    if isinstance(value, Mapping):
      row = value
      break
  if row is None:
    raise FormatError(f"{name}: no object row in the first {_DETECT_ROWS} rows to detect the "
                      "layout from")
  matches = [(layout, reason) for layout, rule in _DETECTORS.items()
             if (reason := rule(row, fields)) is not None]
  if len(matches) == 1:
    layout, reason = matches[0]
    return layout, f"layout: {layout} ({reason})"
  problem = ("several layouts match: " + ", ".join(m for m, _ in matches) if matches
             else "no layout matches")
  known = "; ".join(f"{layout}: {keys}" for layout, keys in _layout_keys(fields).items())
  raise FormatError(f"{location}: cannot detect the layout ({problem}); the first row has keys "
                    f"{sorted(row)}. Layouts and their keys: {known}. Name one with layout=... "
                    "or rename fields with Fields(...).")


def _layout_keys(fields: Fields) -> dict[str, str]:
  p, c, r = fields.prompt[0], fields.chosen, fields.rejected
  return {
      "pairwise": f"{p}, {c}, {r} (strings)",
      "pairwise_implicit": f"{c}, {r} (strings, no {p})",
      "transcript": f"{c}, {r} (strings holding {fields.assistant_marker!r}, no {p})",
      "conversational": f"{c}, {r} (message lists), optional {p} (message list)",
      "listwise": f"{p}, {fields.responses}, {fields.scores} (lists)",
      "ultrafeedback": (f"{' or '.join(fields.prompt)}, {fields.completions} (objects with "
                        f"{fields.response}, {fields.rating})"),
      "unpaired": f"{p}, {fields.completion} (strings), {fields.label}",
      "unpaired_conversational": f"{p}, {fields.completion} (message lists), {fields.label}",
  }


def is_messages(value: Any) -> bool:
  """Whether `value` is a non-empty list of `{role, content}` objects with string values."""
  value = value.tolist() if hasattr(value, "tolist") else value
  return (isinstance(value, (list, tuple)) and bool(value)
          and all(isinstance(m, Mapping) and isinstance(m.get("role"), str)
                  and isinstance(m.get("content"), str) for m in value))


def _prompt_name(row: Mapping[str, Any], fields: Fields) -> Optional[str]:
  return next((name for name in fields.prompt if name in row), None)


def _keys(*names: Optional[str]) -> str:
  return "keys " + ", ".join(name for name in names if name is not None)


def _detect_pair(row, fields: Fields, *, kind: str) -> Optional[str]:
  """Rule of the four chosen/rejected layouts (`kind` names which one is asked about)."""
  if fields.chosen not in row or fields.rejected not in row:
    return None
  chosen, rejected = row[fields.chosen], row[fields.rejected]
  prompt_name = _prompt_name(row, fields)
  prompt = row.get(prompt_name) if prompt_name else None
  pair = f"{fields.chosen}, {fields.rejected}"
  if is_messages(chosen) and is_messages(rejected):
    if kind != "conversational":
      return None
    if is_messages(prompt):
      return f"keys {pair}, {prompt_name} as message lists"
    return (f"keys {pair} as message lists, no {fields.prompt[0]} messages: the prompt is their "
            "shared leading messages")
  if not (isinstance(chosen, str) and isinstance(rejected, str)):
    return None
  if prompt_name is not None:
    return f"keys {prompt_name}, {pair} as strings" if kind == "pairwise" else None
  transcript = fields.assistant_marker in chosen
  if kind == "transcript" and transcript:
    return f"keys {pair} as transcripts holding {fields.assistant_marker!r}, no prompt"
  if kind == "pairwise_implicit" and not transcript:
    return f"keys {pair} as strings, no prompt: the prompt is their shared prefix"
  return None


def _detect_listwise(row, fields: Fields) -> Optional[str]:
  if fields.responses in row and fields.scores in row:
    return _keys(_prompt_name(row, fields), fields.responses, fields.scores)
  return None


def _detect_ultrafeedback(row, fields: Fields) -> Optional[str]:
  completions = row.get(fields.completions)
  completions = completions.tolist() if hasattr(completions, "tolist") else completions
  if isinstance(completions, (list, tuple)) and completions and all(
      isinstance(c, Mapping) for c in completions):
    return (f"{_keys(_prompt_name(row, fields), fields.completions)} as objects with "
            f"{fields.response} and {fields.rating}")
  return None


def _detect_unpaired(row, fields: Fields, *, conversational: bool) -> Optional[str]:
  if fields.completion not in row or fields.label not in row:
    return None
  completion = row[fields.completion]
  keys = _keys(_prompt_name(row, fields), fields.completion)
  if conversational and is_messages(completion):
    return f"{keys} as message lists, {fields.label}"
  if not conversational and isinstance(completion, str):
    return f"{keys} as strings, {fields.label}"
  return None


_DETECTORS = {
    "pairwise": lambda row, f: _detect_pair(row, f, kind="pairwise"),
    "pairwise_implicit": lambda row, f: _detect_pair(row, f, kind="pairwise_implicit"),
    "transcript": lambda row, f: _detect_pair(row, f, kind="transcript"),
    "conversational": lambda row, f: _detect_pair(row, f, kind="conversational"),
    "listwise": _detect_listwise,
    "ultrafeedback": _detect_ultrafeedback,
    "unpaired": lambda row, f: _detect_unpaired(row, f, conversational=False),
    "unpaired_conversational": lambda row, f: _detect_unpaired(row, f, conversational=True),
}


# -------------------------------------------------------------------------------------- layouts


def _field(row: Mapping[str, Any], names: str | tuple[str, ...], location: str) -> Any:
  names = (names,) if isinstance(names, str) else names
  for name in names:
    if name in row:
      return row[name]
  raise FormatError(f"{location}: missing field {' or '.join(map(repr, names))}")


def _text(row, names, location) -> str:
  value = _field(row, names, location)
  if not isinstance(value, str):
    raise FormatError(f"{location}: field {names!r} must be a string, got {type(value).__name__}")
  return value


def _number(value: Any, what: str, location: str) -> float:
  """A score as float; `None` (a missing rating) becomes NaN and goes to the NaN policy."""
  if value is None:
    return math.nan
  if not isinstance(value, numbers.Real):
    raise FormatError(f"{location}: {what} must be a number, got {value!r}")
  return float(value)


def _list(row, name, location) -> list:
  value = _field(row, name, location)
  if not isinstance(value, (list, tuple)) and not hasattr(value, "tolist"):
    raise FormatError(f"{location}: field {name!r} must be a list, got {type(value).__name__}")
  return list(value.tolist() if hasattr(value, "tolist") else value)


def _messages(value: Any, what: str, location: str) -> list[dict]:
  """A message list as plain dicts (keys with a null value, which Parquet and Arrow give for the
  fields of other rows' messages, are left out); an empty list is an empty text."""
  value = value.tolist() if hasattr(value, "tolist") else value
  if not isinstance(value, (list, tuple)) or not (not value or is_messages(value)):
    raise FormatError(f"{location}: {what} must be a list of {{role, content}} messages with "
                      f"string values, got {value!r:.80}")
  return [{k: v for k, v in m.items() if v is not None} for m in value]


def _parse_pairwise(row, fields: Fields, location):
  return (_text(row, fields.prompt, location),
          [_text(row, fields.chosen, location), _text(row, fields.rejected, location)],
          [1.0, 0.0])


def _parse_pairwise_implicit(row, fields: Fields, location):
  try:
    prompt, chosen, rejected = extract_prompt(_text(row, fields.chosen, location),
                                              _text(row, fields.rejected, location))
  except ValueError as e:
    raise FormatError(f"{location}: {e}") from None
  return prompt, [chosen, rejected], [1.0, 0.0]


def _parse_transcript(row, fields: Fields, location):
  chosen = _text(row, fields.chosen, location)
  rejected = _text(row, fields.rejected, location)
  try:
    prompt, chosen, rejected = split_transcript(chosen, rejected, marker=fields.assistant_marker)
  except ValueError as e:
    raise FormatError(f"{location}: {e}") from None
  return prompt, [chosen, rejected], [1.0, 0.0]


def _parse_conversational(row, fields: Fields, location):
  chosen = _messages(_field(row, fields.chosen, location), repr(fields.chosen), location)
  rejected = _messages(_field(row, fields.rejected, location), repr(fields.rejected), location)
  name = _prompt_name(row, fields)
  if name is not None and not isinstance(row[name], str):  # explicit prompt messages
    return _messages(row[name], repr(name), location), [chosen, rejected], [1.0, 0.0]
  try:
    prompt, chosen, rejected = extract_prompt(chosen, rejected)
  except ValueError as e:
    raise FormatError(f"{location}: {e}") from None
  return prompt, [chosen, rejected], [1.0, 0.0]


def _parse_listwise(row, fields: Fields, location):
  prompt = _field(row, fields.prompt, location)
  conversational = not isinstance(prompt, str)
  if conversational:
    prompt = _messages(prompt, "the prompt", location)
  responses = _list(row, fields.responses, location)
  scores = _list(row, fields.scores, location)
  if len(responses) != len(scores):
    raise FormatError(f"{location}: {len(responses)} responses but {len(scores)} scores")
  if conversational:
    responses = [_messages(r, "a response of a message-list prompt", location)
                 for r in responses]
  for r in responses:
    if not conversational and not isinstance(r, str):
      raise FormatError(f"{location}: responses must be strings, got {type(r).__name__}")
  return prompt, responses, [_number(s, "score", location) for s in scores]


def _parse_ultrafeedback(row, fields: Fields, location):
  prompt = _text(row, fields.prompt, location)
  responses, scores = [], []
  for i, completion in enumerate(_list(row, fields.completions, location)):
    where = f"{location}: completions[{i}]"
    if not isinstance(completion, Mapping):
      raise FormatError(f"{where} must be an object")
    responses.append(_text(completion, fields.response, where))
    scores.append(_number(_field(completion, fields.rating, where), fields.rating, where))
  return prompt, responses, scores


def _parse_unpaired(row, fields: Fields, location):
  return (_text(row, fields.prompt, location), [_text(row, fields.completion, location)],
          [_number(_field(row, fields.label, location), "label", location)])


def _parse_unpaired_conversational(row, fields: Fields, location):
  prompt = _messages(_field(row, fields.prompt, location), "the prompt", location)
  completion = _messages(_field(row, fields.completion, location), repr(fields.completion),
                         location)
  return prompt, [completion], [_number(_field(row, fields.label, location), "label", location)]


_PARSERS = {
    "pairwise": _parse_pairwise,
    "pairwise_implicit": _parse_pairwise_implicit,
    "transcript": _parse_transcript,
    "conversational": _parse_conversational,
    "listwise": _parse_listwise,
    "ultrafeedback": _parse_ultrafeedback,
    "unpaired": _parse_unpaired,
    "unpaired_conversational": _parse_unpaired_conversational,
}


def extract_prompt(chosen: Sequence, rejected: Sequence) -> tuple[Sequence, Sequence, Sequence]:
  """Splits an implicit prompt off two completions: TRL's `extract_prompt` rule.

  Works on strings (characters) and message lists (messages). With `i` the first index where
  `chosen` and `rejected` differ, the prompt is `chosen[:i]`, except that a string prefix ending
  in a space leaves that space to the completions (`i − 1`). When the shorter one is a prefix of
  the other, `i` is its last index, so neither completion is empty. Unlike TRL (which then looks
  at `chosen[-1]`), a difference at index 0 gives an empty prompt, which `DataPolicy.empty_prompt`
  handles. Example: `"The sky is blue."`, `"The sky is green."` -> `("The sky is", " blue.",
  " green.")` (von Werra et al., *TRL: Transformer Reinforcement Learning*, 2020).

  Returns:
    `(prompt, chosen_completion, rejected_completion)`.
  Raises:
    ValueError: if `chosen` or `rejected` is empty.
  """
  n = min(len(chosen), len(rejected))
  if n == 0:
    raise ValueError("chosen and rejected must both be non-empty to extract a prompt")
  cut = next((i for i in range(n) if chosen[i] != rejected[i]), n - 1)
  if 0 < cut < n and chosen[cut] != rejected[cut] and chosen[cut - 1] == " ":
    cut -= 1
  return chosen[:cut], chosen[cut:], rejected[cut:]


def split_transcript(chosen: str, rejected: str, *,
                     marker: str = "\n\nAssistant:") -> tuple[str, str, str]:
  """Splits two full transcripts at the last `marker` inside their common prefix.

  HH-RLHF (Bai et al., *Training a Helpful and Harmless Assistant with Reinforcement Learning
  from Human Feedback*, 2022) stores `chosen` and `rejected` as whole dialogues that differ only
  in the last assistant turn: `prompt = chosen[:i + len(marker)]` with `i` the last occurrence of
  `marker` lying wholly in the common prefix.

  Returns:
    `(prompt, chosen_response, rejected_response)`; the prompt ends with `marker`.
  Raises:
    ValueError: if the common prefix holds no `marker`.
  """
  common = os.path.commonprefix([chosen, rejected])
  i = common.rfind(marker)
  if i < 0:
    raise ValueError(f"chosen and rejected share no prefix ending in {marker!r}")
  cut = i + len(marker)
  return chosen[:cut], chosen[cut:], rejected[cut:]


# --------------------------------------------------------------------------------------- policy


def _blank(text: str | Sequence[Mapping[str, Any]]) -> bool:
  """An empty text: whitespace only, or a message list without non-blank content."""
  if isinstance(text, str):
    return not text.strip()
  return not any(str(m.get("content", "")).strip() for m in text)


def apply_policy(
    prompt: str | Sequence[Mapping[str, Any]],
    responses: Sequence,
    scores: Sequence[float],
    *,
    policy: DataPolicy = DataPolicy(),
    stats: Optional[DataStats] = None,
    location: str = "record",
    expect_list: bool = True,
) -> Optional[dict]:
  """Applies the checks of the module docstring to one record.

  Args:
    prompt, responses, scores: the parsed record (`len(responses) == len(scores)`): texts, or
      message lists.
    policy: the bad-input policy.
    stats: receives one count per problem found and per response dropped.
    location: named in errors and stats.
    expect_list: False for unpaired data (K = 1 by design: no single-response or tie checks).
  Returns:
    The canonical record, or None if the policy drops it.
  Raises:
    FormatError: where the policy says `raise`.
  """
  stats = DataStats() if stats is None else stats
  if _blank(prompt):
    stats.add("empty_prompt", location)
    if _act(policy.empty_prompt, "empty_prompt", location) == "drop_record":
      return None
  items = list(zip(responses, (float(s) for s in scores)))
  checks = (
      ("nonfinite_score", lambda i, r, s: not math.isfinite(s)),
      ("empty_response", lambda i, r, s: _blank(r)),
      ("duplicate_response", lambda i, r, s: any(r == q for q, _ in items[:i])),
  )
  for kind, is_bad in checks:
    bad = [is_bad(i, r, s) for i, (r, s) in enumerate(items)]
    if not any(bad):
      continue
    stats.add(kind, location, sum(bad))
    action = _act(getattr(policy, kind), kind, location)
    if action == "drop_record":
      return None
    if action == "drop_response":
      stats.add("dropped_responses", n=sum(bad))
      items = [item for item, b in zip(items, bad) if not b]
  if expect_list and len(items) < 2:
    stats.add("single_response", location)
    if _act(policy.single_response, "single_response", location) == "drop":
      return None
  if not items:
    return None
  values = [s for _, s in items]
  if len(values) >= 2 and len(set(values)) < len(values):
    if len(set(values)) == 1:
      stats.add("all_tied", location)
      if _act(policy.all_tied, "all_tied", location) == "drop":
        return None
    else:
      stats.add("records_with_ties", location)
  return {"prompt": prompt, "responses": [r for r, _ in items], "scores": values}


def _act(action: str, kind: str, location: str) -> str:
  if action == "raise":
    raise FormatError(f"{location}: {kind.replace('_', ' ')} (DataPolicy.{kind}='raise')")
  return action


# ---------------------------------------------------------------------------------- binarising


def binarize(records: Iterable[Mapping[str, Any]], rule: str = "best_vs_worst", seed: int = 0,
             *, stats: Optional[DataStats] = None) -> list[dict]:
  """Pairs for a pairwise objective from graded lists: `{prompt, responses: [chosen, rejected],
  scores: [1, 0]}` records, in record order (texts or messages are kept as they are).

  With `s` a record's scores and `b` the first index of its best score:

  - `"best_vs_worst"` (default): `(b, w)`, `w` the first index of the worst score, as
    Self-Rewarding LMs build their pairs (Yuan et al., *Self-Rewarding Language Models*, ICML
    2024).
  - `"best_vs_random"`: `(b, j)`, `j` uniform among the responses scored below `s_b`, drawn
    with `numpy.random.default_rng([seed, record index])`: `HuggingFaceH4/ultrafeedback_binarized`
    (Tunstall et al., *Zephyr: Direct Distillation of LM Alignment*, 2023).
  - `"all_pairs"`: every ordered `(i, j)` with `s_i > s_j`, by `i` then `j`: the K(K−1)/2 pairs
    of a list without ties, as reward models are trained on ranked lists (Ouyang et al.,
    *Training language models to follow instructions with human feedback*, NeurIPS 2022).

  Tied scores never form a pair; a list whose scores are all tied (or K = 1) gives none.
  `stats` counts `binarize_lists` (records in), `binarize_pairs` (records out) and
  `binarize_no_pair` (lists that gave no pair).

  Args:
    records: canonical records.
    rule: one of `BINARIZE_RULES`.
    seed: the seed of `"best_vs_random"`.
    stats: receives the counts.
  """
  if rule not in BINARIZE_RULES:
    raise ValueError(f"unknown binarisation rule {rule!r}; expected one of {BINARIZE_RULES}")
  stats = DataStats() if stats is None else stats
  out = []
  for index, record in enumerate(records):
    pairs = _pairs(np.asarray(record["scores"], np.float64), rule, seed, index)
    stats.add("binarize_lists")
    stats.add("binarize_pairs", n=len(pairs))
    if not pairs:
      stats.add("binarize_no_pair")
    responses = record["responses"]
    out.extend({"prompt": record["prompt"], "responses": [responses[i], responses[j]],
                "scores": [1.0, 0.0]} for i, j in pairs)
  return out


def _pairs(scores: np.ndarray, rule: str, seed: int, index: int) -> list[tuple[int, int]]:
  """`(chosen, rejected)` indices of one list under `rule` (see `binarize`)."""
  if scores.size < 2:
    return []
  if rule == "all_pairs":
    return [(i, j) for i in range(scores.size) for j in range(scores.size)
            if scores[i] > scores[j]]
  best = int(np.argmax(scores))
  worse = np.flatnonzero(scores < scores[best])
  if worse.size == 0:
    return []
  if rule == "best_vs_worst":
    return [(best, int(np.argmin(scores)))]
  return [(best, int(worse[np.random.default_rng([seed, index]).integers(worse.size)]))]
