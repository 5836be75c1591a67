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


# ------------------------------------------------------------- implicit and conversational layouts


def user(content):
  return {"role": "user", "content": content}


def assistant(content):
  return {"role": "assistant", "content": content}


def test_implicit_prompt_strings_by_trls_rule():
  records, stats = read("pairwise_implicit.jsonl", "pairwise_implicit")
  assert records == [
      # First difference at "b"/"g" (index 11) after a space: the space goes to the completions.
      {"prompt": "The sky is", "responses": [" blue.", " green."], "scores": [1.0, 0.0]},
      # First difference at index 4, after "=": no shift.
      {"prompt": "2+2=", "responses": ["4", "5"], "scores": [1.0, 0.0]},
      # "Hi there" is a prefix of "Hi there!": the cut is at its last index (7).
      {"prompt": "Hi ther", "responses": ["e", "e!"], "scores": [1.0, 0.0]},
  ]
  # "Yes" / "No" differ at index 0: empty prompt, dropped by the default policy.
  assert stats.counts["empty_prompt"] == 1
  assert stats.locations["empty_prompt"] == [path("pairwise_implicit.jsonl") + ":line 4"]


def test_extract_prompt_on_messages_and_strings():
  chosen = [user("a"), assistant("b"), user("c"), assistant("d")]
  rejected = [user("a"), assistant("b"), user("c"), assistant("e")]
  assert formats.extract_prompt(chosen, rejected) == (chosen[:3], chosen[3:], rejected[3:])
  assert formats.extract_prompt("x y", "x z") == ("x", " y", " z")
  with pytest.raises(ValueError, match="non-empty"):
    formats.extract_prompt("", "a")


def test_conversational_explicit_prompt_keeps_the_messages():
  records, _ = read("conversational.jsonl", "conversational")
  assert records == [
      {"prompt": [user("What color is the sky?")],
       "responses": [[assistant("It is blue.")], [assistant("It is green.")]],
       "scores": [1.0, 0.0]},
      {"prompt": [{"role": "system", "content": "Be brief."}, user("2+2?")],
       "responses": [[assistant("4")], [assistant("5")]], "scores": [1.0, 0.0]},
  ]


def test_conversational_implicit_prompt_is_the_shared_leading_messages():
  records, _ = read("conversational_implicit.jsonl", "conversational")
  assert records[0] == {"prompt": [user("What color is the sky?")],
                        "responses": [[assistant("It is blue.")], [assistant("It is green.")]],
                        "scores": [1.0, 0.0]}
  assert records[1]["prompt"] == [user("1+1?"), assistant("2"), user("And 2+2?")]
  assert records[1]["responses"] == [[assistant("4")], [assistant("5")]]
  # ultrafeedback_binarized: a string prompt beside conversational chosen/rejected is ignored.
  binarized, _ = read("ultrafeedback_binarized.jsonl", "conversational")
  assert binarized == records[:1]


def test_unpaired_conversational():
  records, stats = read("unpaired_conversational.jsonl", "unpaired_conversational")
  assert records == [
      {"prompt": [user("Greet me.")], "responses": [[assistant("Hello!")]], "scores": [1.0]},
      {"prompt": [user("Greet me.")], "responses": [[assistant("Whatever.")]], "scores": [0.0]},
  ]
  # A completion whose only content is blank is an empty response.
  assert stats.counts["empty_response"] == 1 and stats.counts["dropped_records"] == 1


def test_conversational_policy_and_malformed_messages():
  blank = {"prompt": [user("q")], "chosen": [assistant("a")], "rejected": [assistant(" ")]}
  twice = {"prompt": [user("q")], "chosen": [assistant("a")], "rejected": [assistant("a")]}
  stats = formats.DataStats()
  assert list(formats.canonicalize([blank, twice], layout="conversational", stats=stats)) == []
  assert (stats.counts["empty_response"], stats.counts["duplicate_response"]) == (1, 1)
  bad = {"prompt": [user("q")], "chosen": [{"content": "a"}], "rejected": [assistant("b")]}
  with pytest.raises(formats.FormatError, match=r"record 0: 'chosen' must be a list of \{role"):
    list(formats.canonicalize([bad], layout="conversational"))


def test_listwise_message_lists_round_trip():
  record = {"prompt": [user("q")], "responses": [[assistant("a")], [assistant("b")]],
            "scores": [0.0, 2.0]}
  assert list(formats.canonicalize([record], layout="listwise")) == [record]
  with pytest.raises(formats.FormatError, match="must be a list of"):
    list(formats.canonicalize([dict(record, responses=["a", "b"])], layout="listwise"))


def test_parquet_messages_drop_the_null_fields_of_other_messages(tmp_path):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  rows = [{"prompt": [dict(user("q"), name="ann")], "chosen": [assistant("a")],
           "rejected": [assistant("b")]}]
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
  records = list(formats.read_records(tmp_path / "c.parquet", layout="auto"))
  assert records == [{"prompt": [dict(user("q"), name="ann")],
                      "responses": [[assistant("a")], [assistant("b")]], "scores": [1.0, 0.0]}]


# ------------------------------------------------------------------------------------ detection


@pytest.mark.parametrize("name, layout, reason", [
    ("pairwise.jsonl", "pairwise", "keys prompt, chosen, rejected as strings"),
    ("pairwise.parquet", "pairwise", "keys prompt, chosen, rejected as strings"),
    ("pairwise_bad.jsonl", "pairwise", "keys prompt, chosen, rejected as strings"),
    ("pairwise_implicit.jsonl", "pairwise_implicit",
     "keys chosen, rejected as strings, no prompt: the prompt is their shared prefix"),
    ("hh_rlhf.jsonl", "transcript",
     "keys chosen, rejected as transcripts holding '\\n\\nAssistant:', no prompt"),
    ("conversational.jsonl", "conversational", "keys chosen, rejected, prompt as message lists"),
    ("conversational_implicit.jsonl", "conversational",
     "keys chosen, rejected as message lists, no prompt messages: the prompt is their shared "
     "leading messages"),
    ("ultrafeedback_binarized.jsonl", "conversational",
     "keys chosen, rejected as message lists, no prompt messages: the prompt is their shared "
     "leading messages"),
    ("listwise.jsonl", "listwise", "keys prompt, responses, scores"),
    ("ultrafeedback.jsonl", "ultrafeedback",
     "keys instruction, completions as objects with response and overall_score"),
    ("ultrafeedback.parquet", "ultrafeedback",
     "keys instruction, completions as objects with response and overall_score"),
    ("unpaired.jsonl", "unpaired", "keys prompt, completion as strings, label"),
    ("unpaired_conversational.jsonl", "unpaired_conversational",
     "keys prompt, completion as message lists, label"),
])
def test_each_layout_is_detected_and_auto_reads_like_the_named_layout(name, layout, reason):
  assert formats.detect_layout(path(name)) == (layout, f"layout: {layout} ({reason})")
  skip = formats.DataPolicy(on_error="skip")
  assert (list(formats.read_records(path(name), layout="auto", policy=skip))
          == list(formats.read_records(path(name), layout=layout, policy=skip)))


def test_detection_skips_rows_that_are_not_objects():
  rows = [("f:line 1", formats.FormatError("bad")), ("f:line 2", {"prompt": "p", "completion": "c",
                                                                  "label": 1})]
  assert formats.detect_layout(rows)[0] == "unpaired"
  assert formats.detect_layout([{"responses": [], "scores": []}])[0] == "listwise"


def test_unknown_and_ambiguous_keys_are_clear_errors(tmp_path):
  unknown = tmp_path / "qa.jsonl"
  unknown.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
  with pytest.raises(formats.FormatError) as e:
    formats.detect_layout(unknown)
  message = str(e.value)
  assert message.startswith(f"{unknown}:line 1: cannot detect the layout (no layout matches); "
                            "the first row has keys ['answer', 'question']")
  assert "pairwise: prompt, chosen, rejected (strings)" in message
  assert "unpaired: prompt, completion (strings), label" in message
  both = {"prompt": "p", "chosen": "a", "rejected": "b", "responses": ["a"], "scores": [1]}
  with pytest.raises(formats.FormatError, match="several layouts match: pairwise, listwise"):
    list(formats.canonicalize([both], layout="auto"))
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n")
  with pytest.raises(formats.FormatError, match="empty.jsonl: no object row"):
    formats.detect_layout(empty)


def test_detection_follows_the_field_names():
  fields = formats.Fields(prompt="question", chosen="good", rejected="bad")
  row = {"question": "q", "good": "g", "bad": "b"}
  assert formats.detect_layout([row], fields=fields) == (
      "pairwise", "layout: pairwise (keys question, good, bad as strings)")


# ---------------------------------------------------------------------------- datasets folders


def save_to_disk(folder, rows, shards=1):
  """A `Dataset.save_to_disk` folder written with pyarrow: Arrow IPC stream shards + state."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  os.makedirs(folder)
  table = pa.Table.from_pylist(rows)
  names = [f"data-{i:05d}-of-{shards:05d}.arrow" for i in range(shards)]
  size = -(-len(rows) // shards)
  for i, name in enumerate(names):
    with pa.OSFile(os.path.join(folder, name), "wb") as sink:
      with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.slice(i * size, size), max_chunksize=1)
  state = {"_data_files": [{"filename": n} for n in names], "_fingerprint": "0",
           "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
           "_output_all_columns": False, "_split": None}
  with open(os.path.join(folder, "state.json"), "w") as f:
    json.dump(state, f)
  with open(os.path.join(folder, "dataset_info.json"), "w") as f:
    json.dump({"citation": "", "description": "", "features": {}}, f)


def test_datasets_folder_and_dataset_dict_splits(tmp_path):
  rows = [json.loads(line) for line in open(path("conversational_implicit.jsonl"))]
  expected = list(formats.read_records(path("conversational_implicit.jsonl"), layout="auto"))
  save_to_disk(tmp_path / "one", rows, shards=2)
  assert list(formats.read_records(tmp_path / "one", layout="auto")) == expected
  assert [where for where, _ in formats.read_rows(tmp_path / "one")] == [
      f"{tmp_path / 'one'}:row 0", f"{tmp_path / 'one'}:row 1"]
  # A DatasetDict: dataset_dict.json names the splits, one folder each.
  save_to_disk(tmp_path / "dd" / "train", rows)
  save_to_disk(tmp_path / "dd" / "test", rows[:1])
  with open(tmp_path / "dd" / "dataset_dict.json", "w") as f:
    json.dump({"splits": ["train", "test"]}, f)
  assert list(formats.read_records(f"{tmp_path / 'dd'}:test", layout="auto")) == expected[:1]
  assert list(formats.read_records(tmp_path / "dd", layout="conversational",
                                   split="train")) == expected
  assert formats.detect_layout(f"{tmp_path / 'dd'}:train")[0] == "conversational"
  with pytest.raises(ValueError, match=r"DatasetDict with splits \['train', 'test'\]"):
    list(formats.read_rows(tmp_path / "dd"))
  with pytest.raises(ValueError, match="no state.json"):
    list(formats.read_rows(tmp_path))


# --------------------------------------------------------------------------------- binarisation

LISTS = [
    {"prompt": "p", "responses": ["a", "b", "c", "d"], "scores": [2.0, 5.0, 1.0, 5.0]},
    {"prompt": "q", "responses": ["x", "y"], "scores": [1.0, 1.0]},
    {"prompt": "r", "responses": ["u", "v", "w"], "scores": [0.0, 3.0, 1.0]},
]


def pair(prompt, chosen, rejected):
  return {"prompt": prompt, "responses": [chosen, rejected], "scores": [1.0, 0.0]}


def test_best_vs_worst_by_hand():
  stats = formats.DataStats()
  # "b" is the first best of p ("d" ties it), "c" its worst; q is all tied: no pair.
  assert formats.binarize(LISTS, stats=stats) == [pair("p", "b", "c"), pair("r", "v", "u")]
  assert stats.counts == {"binarize_lists": 3, "binarize_pairs": 2, "binarize_no_pair": 1}


def test_all_pairs_by_hand():
  stats = formats.DataStats()
  assert formats.binarize(LISTS, "all_pairs", stats=stats) == [
      pair("p", "a", "c"), pair("p", "b", "a"), pair("p", "b", "c"), pair("p", "d", "a"),
      pair("p", "d", "c"),  # b and d tie: no pair between them
      pair("r", "v", "u"), pair("r", "v", "w"), pair("r", "w", "u")]
  assert stats.counts == {"binarize_lists": 3, "binarize_pairs": 8, "binarize_no_pair": 1}


def test_best_vs_random_is_seeded_and_never_pairs_a_tie():
  rejected = set()
  for seed in range(20):
    pairs = formats.binarize(LISTS, "best_vs_random", seed=seed)
    assert pairs == formats.binarize(LISTS, "best_vs_random", seed=seed)
    assert [p["responses"][0] for p in pairs] == ["b", "v"]
    rejected.add(pairs[0]["responses"][1])
    assert pairs[1]["responses"][1] in ("u", "w")
  assert rejected == {"a", "c"}  # below "b"'s 5.0; "d" ties it


def test_binarize_keeps_messages_and_checks_the_rule():
  record = {"prompt": [user("q")], "responses": [[assistant("a")], [assistant("b")]],
            "scores": [0.0, 2.0]}
  assert formats.binarize([record]) == [
      {"prompt": [user("q")], "responses": [[assistant("b")], [assistant("a")]],
       "scores": [1.0, 0.0]}]
  assert formats.binarize([{"prompt": "p", "responses": ["a"], "scores": [1.0]}]) == []
  with pytest.raises(ValueError, match="unknown binarisation rule 'best'"):
    formats.binarize(LISTS, "best")
