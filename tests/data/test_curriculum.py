"""Tests of the Curry-DPO curricula: pairs of one list and stages over a dataset, by hand."""

import pytest

from alignment.data import curriculum


def test_curry_pairs_and_schedule():
  # Ratings (3, 1, 2, 3, 0): R1 = item 0; item 3 ties with it (no pair); pairs with 4 (gap 3),
  # 1 (gap 2), 2 (gap 1), easy first; stage = rank level of the rejected response.
  chosen, rejected, stage = curriculum.curry_pairs([3, 1, 2, 3, 0])
  assert chosen.tolist() == [0, 0, 0] and rejected.tolist() == [4, 1, 2]
  assert stage.tolist() == [0, 1, 2]
  _, rejected, _ = curriculum.curry_pairs([3, 1, 2, 3, 0], where=[True, True, True, True, False])
  assert rejected.tolist() == [1, 2]
  stages = curriculum.curry_schedule([[3, 1, 2, 0], [1, 2, 2, 0]])
  assert [s.tolist() for s in stages] == [[[0, 0, 3], [1, 1, 3]], [[0, 0, 1], [1, 1, 0]],
                                          [[0, 0, 2]]]
  by_gap = curriculum.curry_schedule([[3, 1, 2, 0], [1, 2, 2, 0]], by="gap", num_stages=2)
  # Gaps: (0,3) 3, (0,1) 2, (1,3) 2, (0,2) 1, (1,0) 1 -> [3, 2, 2] and [1, 1].
  assert [s.tolist() for s in by_gap] == [[[0, 0, 3], [0, 0, 1], [1, 1, 3]],
                                          [[0, 0, 2], [1, 1, 0]]]


def test_curry_schedule_rejects_an_unknown_order():
  with pytest.raises(ValueError, match="curry_schedule: by must be one of"):
    curriculum.curry_schedule([[1, 0]], by="size")


def test_stage_records_by_hand():
  records = [{"prompt": "a", "responses": ["a0", "a1", "a2"], "scores": [0.0, 2.0, 1.0]},
             {"prompt": "b", "responses": ["b0", "b1", "b2"], "scores": [5.0, 1.0, 4.0]}]
  # Stage 0: best vs worst (gaps a 2, b 4: b first); stage 1: best vs second (a 1, b 1: by list).
  assert curriculum.stage_records(records) == [
      [{"prompt": "b", "responses": ["b0", "b1"], "scores": [1.0, 0.0]},
       {"prompt": "a", "responses": ["a1", "a0"], "scores": [1.0, 0.0]}],
      [{"prompt": "a", "responses": ["a1", "a2"], "scores": [1.0, 0.0]},
       {"prompt": "b", "responses": ["b0", "b2"], "scores": [1.0, 0.0]}],
  ]
