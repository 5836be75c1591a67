"""Study 5 (binary feedback): the thumbs data by hand, the grid wiring with a fake pipeline, and
the quick mode end to end (slow)."""

import json
import os

import numpy as np
import pytest

from alignment.data import formats
from alignment.recipes import preference_training as train
from experiments.configs import demo
from experiments.studies import binary_feedback, common


def _pairs(scores, rewards):
  return [{"prompt": f"p{i}", "responses": [f"r{i}0", f"r{i}1"], "scores": list(map(float, s)),
           "rewards": list(map(float, r))} for i, (s, r) in enumerate(zip(scores, rewards))]


def test_unpaired_from_pairs_by_hand():
  pairs = _pairs([[1, 0], [0, 1]], [[2.0, 1.0], [0.5, 3.0]])
  out = binary_feedback.unpaired_from_pairs(pairs, seed=0)
  # Chosen (higher label) -> 1, rejected -> 0, in the permutation drawn with the seed.
  expected = [{"prompt": "p0", "completion": "r00", "label": 1.0},
              {"prompt": "p0", "completion": "r01", "label": 0.0},
              {"prompt": "p1", "completion": "r10", "label": 0.0},
              {"prompt": "p1", "completion": "r11", "label": 1.0}]
  order = np.random.default_rng(0).permutation(4)
  assert out == [expected[i] for i in order]
  assert sorted(map(json.dumps, out)) == sorted(map(json.dumps, expected))
  with pytest.raises(ValueError, match="record 1"):
    binary_feedback.unpaired_from_pairs(_pairs([[1, 0], [1, 1]], [[0, 0], [0, 0]]), seed=0)


def test_thumbs_file_reads_back_as_unpaired_records(tmp_path):
  path = common.write_records(
      binary_feedback.unpaired_from_pairs(_pairs([[0, 1]], [[1.0, 2.0]]), seed=1),
      str(tmp_path / "thumbs.jsonl"))
  assert formats.detect_layout(path)[0] == "unpaired"
  records, stats = train.read_preferences(path, str(tmp_path))
  assert sorted((r["responses"], r["scores"]) for r in records) == [
      (["r00"], [0.0]), (["r01"], [1.0])]
  assert stats["counts"]["kept_records"] == 2
  lists = common.write_records(_pairs([[0, 1]], [[1.0, 2.0]]), str(tmp_path / "pairs.jsonl"))
  assert formats.detect_layout(lists)[0] == "listwise"


def test_binary_feedback_grid_wiring(tmp_path, fake_pipeline):
  pairs = _pairs([[1, 0], [0, 1], [1, 0]], [[2, 1], [1, 2], [3, 1]])
  # A pair of identical responses: DPO's reader drops it, so the thumbs data leave it out.
  duplicate = {"prompt": "p3", "responses": ["same", "same"], "scores": [1.0, 0.0],
               "rewards": [1.0, 1.0]}
  cells = fake_pipeline(pairs + [duplicate])
  summary = binary_feedback.run(demo.get_config(), str(tmp_path), seeds=(0, 1), betas=(0.5,))
  assert [(c["run"], c["data"]) for c in cells] == [
      ("dpo_beta0.5", "pairs"), ("kto_beta0.5", "thumbs"), ("bco_beta0.5", "thumbs")] * 2
  dpo, kto, bco = cells[:3]
  # Same steps; DPO 32 pairs = 64 responses per step, KTO/BCO 64 single responses.
  assert [(c["steps"], c["batch_size"], c["reference"]) for c in (dpo, kto, bco)] == [
      (300, 32, "cache"), (300, 64, "forward"), (300, 64, "cache")]
  assert all(c["loss"] == {"name": c["objective"], "beta": 0.5} for c in cells)
  assert all(c["preferences_k"] == 2 for c in cells)
  assert dpo["records"] == pairs + [duplicate]
  assert kto["records"] == bco["records"] == binary_feedback.unpaired_from_pairs(pairs, seed=0)
  assert cells[4]["records"] == binary_feedback.unpaired_from_pairs(pairs, seed=1)
  assert len(kto["records"]) == 6
  assert summary["responses_per_step"] == 64
  # Fake metric = cell index: kto 2, 5 and dpo 1, 4 -> paired differences 1, 1.
  claim = summary["claims"]["beta=0.5"]["kto_minus_dpo"]
  assert (claim["n"], claim["win_rate_mean"], claim["win_rate_std"]) == (2, 1.0, 0.0)
  assert [(r["objective"], r["beta"], r["n"]) for r in summary["table"]] == [
      ("dpo", 0.5, 2), ("kto", 0.5, 2), ("bco", 0.5, 2)]
  with pytest.raises(ValueError, match="dpo"):
    binary_feedback.run(demo.get_config(), str(tmp_path), objectives=("kto",))


def test_binary_feedback_full_grid_adds_the_papers_beta(tmp_path, fake_pipeline):
  cells = fake_pipeline(_pairs([[1, 0]], [[2, 1]]))
  summary = binary_feedback.run(demo.get_config(), str(tmp_path), seeds=(0,))
  assert [(c["run"], c["loss"]["beta"]) for c in cells] == [
      ("dpo_beta0.5", 0.5), ("kto_beta0.5", 0.5), ("bco_beta0.5", 0.5),
      ("dpo_beta0.1", 0.1), ("kto_beta0.1", 0.1), ("bco_beta0.1", 0.1)]
  # Margins pair each objective with DPO at the same β: at β = 0.1, cells 5 − 4 = 1.
  assert summary["claims"]["beta=0.1"]["kto_minus_dpo"]["win_rate_mean"] == 1.0
  assert summary["betas"] == [0.5, 0.1]


@pytest.mark.slow
def test_quick_binary_feedback_end_to_end(tmp_path):
  workdir = str(tmp_path)
  summary = binary_feedback.run(demo.get_config(), workdir, quick=True)
  assert [(r["objective"], r["data"], r["beta"], r["n"]) for r in summary["table"]] == [
      ("dpo", "pairs", 0.5, 1), ("kto", "thumbs", 0.5, 1), ("bco", "thumbs", 0.5, 1)]
  for row in summary["runs"]:
    assert 0.0 <= row["win_rate"] <= 1.0 and np.isfinite(row["kl"])
  for name in ("binary_feedback.json", "binary_feedback.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  # The KTO run logged its reference point z0 (≥ 0) at every logged step.
  with open(os.path.join(workdir, "seed_0", "kto_beta0.5", "train", "metrics.jsonl"),
            encoding="utf-8") as f:
    assert all(row["kl"] >= 0.0 for row in map(json.loads, f) if "kl" in row)
