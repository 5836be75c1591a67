"""Local preference files (JSONL, Parquet) in common layouts -> canonical records.

Every layout is normalised into one canonical record,

    {"prompt": str, "responses": list[str], "scores": list[float]}    (K = len(responses))

with higher scores better. Layouts (`layout=`), with their default field names (`Fields`):

- `"pairwise"`:      `prompt`, `chosen`, `rejected`                 -> scores `[1, 0]`.
- `"transcript"`:    HH-RLHF full transcripts `chosen`, `rejected` only; the prompt is their common
                     prefix up to and including its last `"\\n\\nAssistant:"`  -> scores `[1, 0]`.
- `"listwise"`:      `prompt`, `responses` (list of str), `scores` (list of numbers, same length).
                     The canonical record itself is in this layout.
- `"ultrafeedback"`: `instruction` (or `prompt`), `completions`: list of dicts with `response` and a
                     rating (`overall_score` by default; `Fields(rating="fine-grained_score")`).
- `"unpaired"`:      `prompt`, `completion`, `label` (KTO data)     -> K = 1, score = label.

Bad input is never dropped silently. `DataPolicy` states what happens to each kind
of problem and `DataStats` counts every occurrence (under the name in brackets) and every action,
with the first few locations (`file:line N` for JSONL, 1-based; `file:row N` for Parquet, 0-based).
The checks, in order, with the `DataPolicy` field of the same name (default action first):

- unreadable JSON, missing field, wrong type [`malformed`]; `on_error`: raise | skip.
- prompt empty or whitespace only [`empty_prompt`]: drop_record | keep | raise.
- score NaN, +-inf or null [`nonfinite_score`]: drop_response | drop_record | keep | raise.
- response empty or whitespace only [`empty_response`]: drop_response | drop_record | keep | raise.
- response text repeated in a list [`duplicate_response`]: drop_response (the first occurrence
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
import json
import math
import numbers
import os
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

LAYOUTS = ("pairwise", "transcript", "listwise", "ultrafeedback", "unpaired")

_RESPONSE_ACTIONS = ("drop_response", "drop_record", "keep", "raise")
_RECORD_ACTIONS = ("drop", "keep", "raise")


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


def read_rows(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
  """Yields `(location, row)` for each row of a `.jsonl`/`.json` (object per line) or `.parquet`.

  A JSONL line that is not valid JSON yields a `FormatError` as its row, so that a caller decides
  whether to raise or skip. Blank lines are not rows.
  """
  path = os.fspath(path)
  if path.endswith((".jsonl", ".json")):
    yield from _jsonl_rows(path)
  elif path.endswith(".parquet"):
    yield from _parquet_rows(path)
  else:
    raise ValueError(f"{path}: unknown file type; expected .jsonl, .json or .parquet")


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


def read_records(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    layout: str,
    fields: Fields = Fields(),
    policy: DataPolicy = DataPolicy(),
    stats: Optional[DataStats] = None,
) -> Iterator[dict]:
  """Canonical records from local files, in file then line order.

  Args:
    paths: one path or a list of `.jsonl`/`.json`/`.parquet` paths.
    layout: one of `LAYOUTS`.
    fields: field names of the layout.
    policy: the bad-input policy.
    stats: a `DataStats` that receives the counts (pass one in to read them afterwards).
  Yields:
    `{"prompt": str, "responses": list[str], "scores": list[float]}`.
  """
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  for path in paths:
    yield from canonicalize(read_rows(path), layout=layout, fields=fields, policy=policy,
                            stats=stats)


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
  their location is `record N`, 0-based). A row that is an exception is malformed.
  """
  if layout not in LAYOUTS:
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
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
                          location=location, expect_list=layout != "unpaired")
    if record is None:
      stats.add("dropped_records")
    else:
      stats.add("kept_records")
      yield record


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


def _parse_pairwise(row, fields: Fields, location):
  return (_text(row, fields.prompt, location),
          [_text(row, fields.chosen, location), _text(row, fields.rejected, location)],
          [1.0, 0.0])


def _parse_transcript(row, fields: Fields, location):
  chosen = _text(row, fields.chosen, location)
  rejected = _text(row, fields.rejected, location)
  try:
    prompt, chosen, rejected = split_transcript(chosen, rejected, marker=fields.assistant_marker)
  except ValueError as e:
    raise FormatError(f"{location}: {e}") from None
  return prompt, [chosen, rejected], [1.0, 0.0]


def _parse_listwise(row, fields: Fields, location):
  prompt = _text(row, fields.prompt, location)
  responses = _list(row, fields.responses, location)
  scores = _list(row, fields.scores, location)
  if len(responses) != len(scores):
    raise FormatError(f"{location}: {len(responses)} responses but {len(scores)} scores")
  for r in responses:
    if not isinstance(r, str):
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


_PARSERS = {
    "pairwise": _parse_pairwise,
    "transcript": _parse_transcript,
    "listwise": _parse_listwise,
    "ultrafeedback": _parse_ultrafeedback,
    "unpaired": _parse_unpaired,
}


def split_transcript(chosen: str, rejected: str, *,
                     marker: str = "\n\nAssistant:") -> tuple[str, str, str]:
  """Splits two full transcripts at the last `marker` inside their common prefix.

  HH-RLHF stores `chosen` and `rejected` as whole dialogues that differ only in the last
  assistant turn: `prompt = chosen[:i + len(marker)]` with `i` the last occurrence of `marker`
  lying wholly in the common prefix.

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


def apply_policy(
    prompt: str,
    responses: Sequence[str],
    scores: Sequence[float],
    *,
    policy: DataPolicy = DataPolicy(),
    stats: Optional[DataStats] = None,
    location: str = "record",
    expect_list: bool = True,
) -> Optional[dict]:
  """Applies the checks of the module docstring to one record.

  Args:
    prompt, responses, scores: the parsed record (`len(responses) == len(scores)`).
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
  if not prompt.strip():
    stats.add("empty_prompt", location)
    if _act(policy.empty_prompt, "empty_prompt", location) == "drop_record":
      return None
  items = list(zip(responses, (float(s) for s in scores)))
  checks = (
      ("nonfinite_score", lambda i, r, s: not math.isfinite(s)),
      ("empty_response", lambda i, r, s: not r.strip()),
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
