"""Tests of alignment.data.formats: layouts, canonical records and the bad-input policy."""

import json
import math
import os

import hypothesis
from hypothesis import strategies as st
import pytest

from alignment.data import formats

DATA = os.path.join(os.path.dirname(__file__), "testdata")


def path(name):
  return os.path.join(DATA, name)


def read(name, layout, **kwargs):
  stats = formats.DataStats()
  records = list(formats.read_records(path(name), layout=layout, stats=stats, **kwargs))
  return records, stats


# ------------------------------------------------------------------------------------ layouts


def test_pairwise_jsonl_and_parquet_give_the_same_records():
  jsonl, stats = read("pairwise.jsonl", "pairwise")
  parquet, _ = read("pairwise.parquet", "pairwise")
  assert jsonl == parquet
  assert jsonl[0] == {"prompt": "What is 2+2?", "responses": ["4", "5"], "scores": [1.0, 0.0]}
  assert [r["prompt"] for r in jsonl] == [
      "What is 2+2?", "Name a colour.", "Capital of France?", "Say hi."]
  assert stats.counts == {"read_records": 4, "kept_records": 4}


def test_transcripts_split_at_the_last_assistant_marker_of_the_common_prefix():
  records, stats = read("hh_rlhf.jsonl", "transcript")
  assert records[0] == {"prompt": "\n\nHuman: Hi\n\nAssistant:",
                        "responses": [" Hello! How can I help?", " Go away."],
                        "scores": [1.0, 0.0]}
  # Two turns: the first assistant answer belongs to the prompt.
  assert records[1]["prompt"] == (
      "\n\nHuman: What is 1+1?\n\nAssistant: 2\n\nHuman: And 2+2?\n\nAssistant:")
  assert records[1]["responses"] == [" 4", " 5"]
  # "42" / "43" share "4": the common prefix runs past the marker, the split does not.
  assert records[2]["prompt"] == "\n\nHuman: Pick a number\n\nAssistant:"
  assert records[2]["responses"] == [" 42", " 43"]
  assert stats.counts["kept_records"] == 3


def test_split_transcript_ignores_a_marker_cut_by_the_end_of_the_common_prefix():
  # Common prefix "\n\nHuman: a\n\nAssistant: b\n\nAssist": only the first marker is whole in it.
  chosen = "\n\nHuman: a\n\nAssistant: b\n\nAssistant: c"
  rejected = "\n\nHuman: a\n\nAssistant: b\n\nAssistance"
  assert formats.split_transcript(chosen, rejected) == (
      "\n\nHuman: a\n\nAssistant:", " b\n\nAssistant: c", " b\n\nAssistance")
  with pytest.raises(ValueError, match="share no prefix"):
    formats.split_transcript("\n\nHuman: a", "\n\nHuman: b")


def test_transcript_without_marker_is_malformed_with_its_line():
  rows = [("f.jsonl:line 7", {"chosen": "x y", "rejected": "x z"})]
  with pytest.raises(formats.FormatError, match=r"f.jsonl:line 7: .*no prefix"):
    list(formats.canonicalize(rows, layout="transcript"))


def test_listwise_ties_nan_and_all_tied():
  records, stats = read("listwise.jsonl", "listwise")
  assert records == [
      {"prompt": "Rank these.", "responses": ["best", "good", "bad"], "scores": [3.0, 2.0, 1.0]},
      # Partial ties are kept: tied labels form no pair in the objectives.
      {"prompt": "Ties.", "responses": ["x", "y", "z"], "scores": [1.0, 1.0, 0.0]},
      # "All tied." is dropped; the NaN response is dropped, the rest kept.
      {"prompt": "NaN score.", "responses": ["x", "z"], "scores": [1.0, 0.0]},
      {"prompt": "Four.", "responses": ["r1", "r2", "r3", "r4"], "scores": [0.5, 1.5, 2.5, -1.0]},
  ]
  assert stats.counts["records_with_ties"] == 1
  assert stats.counts["all_tied"] == 1
  assert stats.locations["all_tied"] == [path("listwise.jsonl") + ":line 3"]
  assert stats.counts["nonfinite_score"] == 1
  assert stats.counts["dropped_responses"] == 1
  assert stats.counts["dropped_records"] == 1


def test_ultrafeedback_ratings_jsonl_and_parquet():
  jsonl, _ = read("ultrafeedback.jsonl", "ultrafeedback")
  parquet, _ = read("ultrafeedback.parquet", "ultrafeedback")
  assert jsonl == parquet
  assert jsonl[0] == {"prompt": "Write a haiku.",
                      "responses": ["Leaves fall", "Snow melts", "I cannot", "Sun rises"],
                      "scores": [7.5, 6.0, 2.0, 8.0]}
  assert jsonl[1]["scores"] == [10.0, 1.0, 1.0, 9.0]
  fine, stats = read("ultrafeedback.jsonl", "ultrafeedback",
                     fields=formats.Fields(rating="fine-grained_score"))
  assert fine[0]["scores"] == [4.25, 4.75, 1.5, 3.0]
  # A null rating is a non-finite score: that completion is dropped.
  assert fine[1] == {"prompt": "Add 3 and 4.", "responses": ["7", "12", "seven"],
                     "scores": [5.0, 1.0, 4.5]}
  assert stats.counts["nonfinite_score"] == 1


def test_unpaired_is_k1_with_the_label_as_score():
  records, stats = read("unpaired.jsonl", "unpaired")
  assert records == [
      {"prompt": "Greet me.", "responses": ["Hello!"], "scores": [1.0]},
      {"prompt": "Greet me.", "responses": ["Whatever."], "scores": [0.0]},
      {"prompt": "2+2?", "responses": ["4"], "scores": [1.0]},
  ]
  # The empty completion: no response left, record dropped; no single-response check for K=1.
  assert stats.counts["empty_response"] == 1
  assert stats.counts["dropped_records"] == 1
  assert "single_response" not in stats.counts


def test_field_names_are_configurable():
  rows = [{"question": "q", "good": "g", "bad": "b"}]
  fields = formats.Fields(prompt="question", chosen="good", rejected="bad")
  assert list(formats.canonicalize(rows, layout="pairwise", fields=fields)) == [
      {"prompt": "q", "responses": ["g", "b"], "scores": [1.0, 0.0]}]
  rows = [{"q": "p", "items": ["a", "b"], "ratings": [0, 1]}]
  fields = formats.Fields(prompt=("q",), responses="items", scores="ratings")
  assert list(formats.canonicalize(rows, layout="listwise", fields=fields)) == [
      {"prompt": "p", "responses": ["a", "b"], "scores": [0.0, 1.0]}]


def test_canonical_records_round_trip_through_the_listwise_layout():
  record = {"prompt": "p", "responses": ["a", "b", "c"], "scores": [0.5, 2.0, -1.0]}
  assert list(formats.canonicalize([record], layout="listwise")) == [record]


# ---------------------------------------------------------------------------------- bad input


def test_malformed_record_raises_naming_file_and_line():
  with pytest.raises(formats.FormatError) as e:
    read("pairwise_bad.jsonl", "pairwise")
  assert str(e.value).startswith(path("pairwise_bad.jsonl") + ":line 2: invalid JSON")


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "chosen": "a"}, r"x:line 1: missing field 'rejected'"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, r"x:line 1: field .* must be a string"),
    ([1], r"x:line 1: expected an object, got list"),
])
def test_each_malformed_kind_names_its_location(row, message):
  with pytest.raises(formats.FormatError, match=message):
    list(formats.canonicalize([("x:line 1", row)], layout="pairwise"))


def test_listwise_malformed_kinds():
  cases = [({"prompt": "p", "responses": ["a"], "scores": [1, 2]}, "1 responses but 2 scores"),
           ({"prompt": "p", "responses": ["a", 2], "scores": [1, 2]}, "must be strings"),
           ({"prompt": "p", "responses": ["a", "b"], "scores": [1, "2"]}, "must be a number"),
           ({"prompt": "p", "responses": "ab", "scores": [1, 2]}, "must be a list")]
  for row, message in cases:
    with pytest.raises(formats.FormatError, match=message):
      list(formats.canonicalize([row], layout="listwise"))


def test_skip_counts_every_problem_and_keeps_every_valid_record():
  records, stats = read("pairwise_bad.jsonl", "pairwise",
                        policy=formats.DataPolicy(on_error="skip"))
  assert records == [{"prompt": "ok 1", "responses": ["a", "b"], "scores": [1.0, 0.0]},
                     {"prompt": "ok 2", "responses": ["c", "d"], "scores": [1.0, 0.0]}]
  where = lambda *lines: [f"{path('pairwise_bad.jsonl')}:line {n}" for n in lines]
  # 10 lines, line 6 blank: 9 rows. Malformed: 2 (JSON), 3 (missing), 9 (type), 10 (list).
  # Line 4 (empty rejected) and 5 (chosen == rejected) lose a response, then have one left.
  # Line 7 has an empty prompt. 9 = 2 kept + 3 dropped + 4 malformed.
  assert dict(stats.counts) == {
      "read_records": 9, "kept_records": 2, "dropped_records": 3, "malformed": 4,
      "empty_response": 1, "duplicate_response": 1, "dropped_responses": 2,
      "single_response": 2, "empty_prompt": 1}
  assert stats.locations["malformed"] == where(2, 3, 9, 10)
  assert stats.locations["single_response"] == where(4, 5)
  assert stats.locations["empty_prompt"] == where(7)
  assert formats.DataStats.from_json(json.loads(json.dumps(stats.to_json()))) == stats


RECORD = dict(prompt="p", responses=["a", "b", "c"], scores=[2.0, 1.0, 0.0])


@pytest.mark.parametrize("kind, record, kept", [
    # (policy field, record with one problem, record after drop_response)
    ("nonfinite_score", dict(RECORD, scores=[2.0, math.nan, 0.0]),
     {"prompt": "p", "responses": ["a", "c"], "scores": [2.0, 0.0]}),
    ("nonfinite_score", dict(RECORD, scores=[2.0, math.inf, 0.0]),
     {"prompt": "p", "responses": ["a", "c"], "scores": [2.0, 0.0]}),
    ("empty_response", dict(RECORD, responses=["a", "\n ", "c"]),
     {"prompt": "p", "responses": ["a", "c"], "scores": [2.0, 0.0]}),
    # The first occurrence of a duplicate is kept.
    ("duplicate_response", dict(RECORD, responses=["a", "c", "c"]),
     {"prompt": "p", "responses": ["a", "c"], "scores": [2.0, 1.0]}),
])
def test_response_level_policies(kind, record, kept):
  for action, expected in [("drop_response", kept), ("drop_record", None),
                           ("keep", record)]:
    stats = formats.DataStats()
    out = formats.apply_policy(**record, policy=formats.DataPolicy(**{kind: action}),
                               stats=stats, location="f:line 4")
    if action == "keep" and kind == "nonfinite_score":
      assert out["responses"] == record["responses"]
      assert not math.isfinite(out["scores"][1])
    else:
      assert out == expected, action
    assert stats.counts[kind] == 1 and stats.locations[kind] == ["f:line 4"]
  with pytest.raises(formats.FormatError, match=f"f:line 4: .*DataPolicy.{kind}='raise'"):
    formats.apply_policy(**record, policy=formats.DataPolicy(**{kind: "raise"}),
                         location="f:line 4")


@pytest.mark.parametrize("kind, record", [
    ("single_response", dict(prompt="p", responses=["a"], scores=[1.0])),
    ("all_tied", dict(prompt="p", responses=["a", "b"], scores=[1.0, 1.0])),
    ("empty_prompt", dict(prompt=" ", responses=["a", "b"], scores=[1.0, 0.0])),
])
def test_record_level_policies(kind, record):
  drop = "drop_record" if kind == "empty_prompt" else "drop"
  assert formats.apply_policy(**record, policy=formats.DataPolicy(**{kind: drop})) is None
  kept = formats.apply_policy(**record, policy=formats.DataPolicy(**{kind: "keep"}))
  assert kept == record
  with pytest.raises(formats.FormatError, match=kind):
    formats.apply_policy(**record, policy=formats.DataPolicy(**{kind: "raise"}))


def test_bad_policy_value_and_layout_and_file_type_are_named():
  with pytest.raises(ValueError, match="DataPolicy.all_tied='sometimes'"):
    formats.DataPolicy(all_tied="sometimes")
  with pytest.raises(ValueError, match="unknown layout 'pairs'"):
    list(formats.canonicalize([], layout="pairs"))
  with pytest.raises(ValueError, match="unknown file type"):
    list(formats.read_records("data.csv", layout="pairwise"))


# ------------------------------------------------------------------ no valid record is lost

_text = st.text(alphabet="ab ", max_size=3)


@st.composite
def _rows(draw):
  """Listwise rows, some malformed; returns (row, expected canonical record or None)."""
  kind = draw(st.sampled_from(["valid", "valid", "malformed", "raw"]))
  if kind == "malformed":
    return draw(st.sampled_from([{"prompt": "p"}, {"responses": [], "scores": []}, "x"])), None
  k = draw(st.integers(1, 4))
  prompt = draw(_text)
  responses = draw(st.lists(_text, min_size=k, max_size=k))
  scores = draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, math.nan]), min_size=k, max_size=k))
  if kind == "valid":  # Forced valid: non-empty distinct responses, finite scores, a partial tie.
    prompt = "q" + prompt
    responses = [f"r{i}" + r for i, r in enumerate(responses)] + ["e", "tie"]
    scores = [float(i + 1) for i in range(k)] + [draw(st.sampled_from([0.0, 7.0])), 1.0]
  row = {"prompt": prompt, "responses": responses, "scores": scores}
  return row, (dict(row) if kind == "valid" else None)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.lists(_rows(), max_size=12))
def test_no_valid_record_is_lost(rows):
  stats = formats.DataStats()
  out = list(formats.canonicalize([row for row, _ in rows], layout="listwise",
                                  policy=formats.DataPolicy(on_error="skip"), stats=stats))
  valid = [expected for _, expected in rows if expected is not None]
  # Every valid record comes out unchanged and in order; others only if the policy repaired them.
  it = iter(out)
  assert all(any(r == v for r in it) for v in valid)
  c = stats.counts
  assert c["read_records"] == len(rows) == c["kept_records"] + c["dropped_records"] + c["malformed"]
  assert c["kept_records"] == len(out)
  for record in out:  # what comes out passes every check
    assert record["prompt"].strip() and len(record["responses"]) >= 2
    assert len(set(record["responses"])) == len(record["responses"])
    assert all(r.strip() for r in record["responses"])
    assert all(math.isfinite(s) for s in record["scores"]) and len(set(record["scores"])) > 1
