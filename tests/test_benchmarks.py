"""Smoke tests of `python -m benchmarks.run --quick` and `python -m benchmarks.own_model --quick`
(ours, and TRL where its venv is already there), and checks of the benchmark helpers.

No timing assertions (shared machines are noisy): the run must produce a well-formed table and
JSON file, and the benchmarks' own agreement checks (our losses against rax and TRL's formulas,
our DPO step's losses against the PyTorch/transformers step) must pass. Peers that are not
installed give rows without a peer value.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.models import config as config_lib
from alignment.models import transformer
from benchmarks import dpo_step
from benchmarks import listwise_cost
from benchmarks import mfu
from benchmarks import run

pytestmark = pytest.mark.slow  # deselected by default; CI runs `pytest -m slow`

_HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench")
  rows = run.main(["--quick", f"--out={out}", "--cases=" + ",".join(run.CASES)])
  with open(out / "results.json") as f:
    results = json.load(f)
  return rows, results, (out / "results.md").read_text()


def test_quick_run_covers_every_case_with_well_formed_rows(quick_run):
  rows, results, _ = quick_run
  assert {r.case for r in rows} == set(run.CASES)
  assert set(results["case_seconds"]) == set(run.CASES)
  assert len(results["rows"]) == len(rows)
  for r in results["rows"]:
    assert set(r) == {"case", "configuration", "ours_label", "ours", "peer_label", "peer",
                      "ratio", "unit", "device"}
    assert r["configuration"] and r["unit"] and r["device"] and r["peer_label"]
    if r["peer"] is None:
      assert r["ratio"] is None
      assert "not installed" in r["peer_label"] or "tunix" in r["peer_label"]
    else:
      assert r["ours"] > 0 and r["peer"] > 0
      assert math.isclose(r["ratio"], r["ours"] / r["peer"], rel_tol=1e-12)


def test_quick_run_markdown_has_one_line_per_row_and_the_command(quick_run):
  rows, results, text = quick_run
  lines = text.splitlines()
  assert lines[0].startswith("Produced by `python -m benchmarks.run --quick")
  table = [l for l in lines if l.startswith("| ") and not l.startswith("| case ")]
  assert len(table) == len(rows)
  assert results["command"].startswith("python -m benchmarks.run --quick")


def test_quick_run_peers(quick_run):
  rows, _, _ = quick_run
  by_case = lambda case: [r for r in rows if r.case == case]
  # Chunked log-probs need less XLA memory than naive ones; the listwise step with prefix sharing
  # processes fewer tokens, hence fewer FLOPs, than the same data as pairs (both deterministic).
  assert all(r.ratio < 1 for r in by_case("memory"))
  assert [r.ratio < 1 for r in by_case("listwise") if r.unit.startswith("GFLOP")] == [True]
  # The MFU row reports XLA's FLOP count of the quick step (tiny preset, 2 pairs x 32 tokens).
  assert f"{_dpo_step_flops(pairs=2, length=32) / 1e9:.1f} GFLOP/step (XLA)" in by_case(
      "mfu")[0].configuration
  peers = [r.peer_label for r in by_case("objectives")]
  if _HAS_TORCH:
    assert sum("TRL" in p for p in peers) == len(__import__(
        "benchmarks.torch_objectives").torch_objectives.CASES)
    assert any(r.peer is not None for r in by_case("dpo_step"))
  else:
    assert any("not installed" in p for p in peers)


def _dpo_step_flops(*, pairs, length):
  """XLA's FLOP count of the tiny float32 DPO train step (compiled with one LM-head tile)."""
  config = config_lib.get_config("tiny", dtype=jnp.float32)
  params = transformer.init_params(config, jax.random.key(0))
  batch = dpo_step.make_batch(config.vocab_size, pairs=pairs, length=length)
  counting, state = dpo_step.train_step("dpo", dpo_step.logp_fn(config, single_tile=True), params,
                                        donate=False)
  return mfu.xla_flops(counting, state, batch, None)


def test_mfu_counts_the_flops_of_forward_and_backward():
  # A [64, 32] @ [32, 16] matmul: 2·64·32·16 = 65536 FLOPs.
  assert mfu.xla_flops(jax.jit(jnp.matmul), jnp.ones((64, 32)), jnp.ones((32, 16))) == 65536
  # The step's weight matmuls take 6·N·T FLOPs (2 forward + 4 backward per weight and token):
  # N = 76096 weights outside the embedding (tiny: per layer q, o 64·64, k, v 64·32, MLP
  # 3·64·128, norms 2·64 = 36992; x 2 layers, + final norm 64 + head 64·32), T = 2·2·32 tokens.
  # Attention scores and element-wise work add less than half as much again.
  ratio = _dpo_step_flops(pairs=2, length=32) / (6 * 76096 * 128)
  assert 1.0 <= ratio <= 1.5


def test_parse_cases_rejects_unknown_names():
  assert run.parse_cases("mfu, data") == ["mfu", "data"]
  with pytest.raises(ValueError, match="unknown.*known: objectives"):
    run.parse_cases("mfu,nope")
  with pytest.raises(ValueError):
    run.parse_cases(",")


def test_markdown_ratio_and_missing_peer():
  rows = [run.Row("c", "cfg", "a", 2.0, "b", 8.0, "ms", "dev"),
          run.Row("c", "cfg", "a", 2.0, "not installed: x", None, "ms", "dev")]
  text = run.markdown(rows, "python -m benchmarks.run")
  assert "| c | cfg | 2 (a) | 8 (b) | 0.25 | ms | dev |" in text  # 2 / 8 = 0.25
  assert "| c | cfg | 2 (a) | — (not installed: x) | — | ms | dev |" in text


def test_dpo_batch_layout():
  batch = dpo_step.make_batch(50, pairs=3, length=8)
  assert batch["tokens"].shape == (3, 2, 8)
  # Prompt = first 8 // 4 = 2 tokens, shared by chosen and rejected; completion = the other 6.
  np.testing.assert_array_equal(batch["tokens"][:, 0, :2], batch["tokens"][:, 1, :2])
  np.testing.assert_array_equal(batch["completion_mask"].sum(-1), np.full((3, 2), 6))
  np.testing.assert_array_equal(batch["response_lengths"], np.full((3, 2), 6))
  assert batch["tokens"].min() >= 1 and batch["tokens"].max() < 50


def test_listwise_and_pairwise_data_hold_the_same_preferences():
  k, p, r = 4, 3, 2
  listwise, pairwise = listwise_cost.make_data(100, prompts=2, k=k, prompt_length=p,
                                               response_length=r)
  assert pairwise["tokens"].shape == (2 * 6, 2, p + r)  # K(K-1)/2 = 6 pairs per prompt
  seen = set()
  for n in range(12):
    b = n // 6
    np.testing.assert_array_equal(pairwise["tokens"][n, :, :p],
                                  np.stack([listwise["prompt_tokens"][b]] * 2))
    slots = []
    for j in range(2):
      match = [s for s in range(k)
               if np.array_equal(listwise["response_tokens"][b, s], pairwise["tokens"][n, j, p:])]
      assert len(match) == 1
      slots.append(match[0])
      assert pairwise["ref_logps"][n, j] == listwise["ref_logps"][b, match[0]]
    # Slot 0 is the better-graded response.
    assert listwise["labels"][b, slots[0]] > listwise["labels"][b, slots[1]]
    seen.add((b, frozenset(slots)))
  assert len(seen) == 12  # every unordered pair exactly once


@pytest.mark.skipif(not _HAS_TORCH, reason="torch (bench extra) not installed")
def test_trl_formulas_match_ours_on_a_hand_worked_pair():
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_objectives  # pylint: disable=g-import-not-at-top
  t = lambda x: torch.tensor([x], dtype=torch.float64)
  # h = (-1 - -3) - (-2 - -2) = 2; β h = 0.2; sigmoid: -log σ(0.2) = log(1 + e^-0.2) = 0.598139.
  value = torch_objectives.trl_loss("sigmoid", t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.1)
  assert math.isclose(float(value), math.log1p(math.exp(-0.2)), rel_tol=1e-12)
  # hinge: max(0, 1 - 0.2) = 0.8; ipo with lengths (2, 4): h = (-1/2 - -3/4) - (-2/2 - -2/4)
  # = 0.25 + 0.5 = 0.75, (0.75 - 5)^2 = 18.0625.
  assert math.isclose(float(torch_objectives.trl_loss(
      "hinge", t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.1)), 0.8, rel_tol=1e-12)
  assert math.isclose(float(torch_objectives.trl_loss(
      "ipo", t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.1, chosen_lengths=t(2.0),
      rejected_lengths=t(4.0))), 18.0625, rel_tol=1e-12)
  with pytest.raises(ValueError, match="unknown loss_type"):
    torch_objectives.trl_loss("nope", t(0.0), t(0.0), t(0.0), t(0.0), beta=0.1)


def test_own_model_clock_and_verdict():
  from benchmarks import own_model  # pylint: disable=g-import-not-at-top
  # Steps 1, 6 and 32 reported: s0 = 6, (32 - 6) / (39.0 - 26.0) = 2 steps/s.
  times = {1: 20.0, 6: 26.0, 32: 39.0}
  assert own_model.first_timed_step(times) == 6
  assert own_model.steps_per_s(times, 6) == 2.0
  assert own_model.first_timed_step({1: 0.0, 4: 1.0}) == 1  # nothing between: from step 1
  assert own_model.publishable(1.5, 0.5) and not own_model.publishable(1.6, 0.0)
  assert not own_model.publishable(0.2, 0.6)
  # The clock is our loop's own progress line.
  from alignment.training import logs  # pylint: disable=g-import-not-at-top
  stream = io.StringIO()
  logs.Progress("train[dpo]", 32, stream=stream).update(7, {"loss": 0.69}, force=True)
  assert own_model.PROGRESS_LINE.match(stream.getvalue()).group(1) == "7"


def test_own_model_quick_run(tmp_path):
  from benchmarks import own_model  # pylint: disable=g-import-not-at-top
  has_trl = own_model.ensure_venv(own_model.DEFAULT_VENV, create=False) is not None
  out = tmp_path / "own_model.json"
  own_model.main(["--quick", "--peer=existing", f"--out={out}"])
  with open(out) as f:
    results = json.load(f)
  assert results["quick"] and results["steps"] == 4  # 32 pairs in batches of 8
  [pair] = results["runs"]
  ours = pair["ours"]
  assert {"1", "4"} <= set(ours["step_times"]) and ours["steps_per_s"] > 0
  assert ours["peak_rss"] > 0
  # Static shapes: batch 8 x 2 responses x (prompt + completion) tokens.
  assert ours["tokens_per_step"] == 16 * (ours["shapes"]["prompt"] + ours["shapes"]["completion"])
  assert "load average" in results["load_before"]["uptime"]
  assert "load average" in results["load_after"]["uptime"]
  assert results["publishable"] == own_model.publishable(results["load_before"]["load1"],
                                                         results["other_cpu_cores"])
  assert ("not publishable" in results["markdown"]) != results["publishable"]
  speed, memory = results["rows"]
  assert (speed["quantity"], memory["quantity"]) == ("steps/s", "peak RSS (VmHWM), MiB")
  assert speed["ours_runs"] == [ours["steps_per_s"]] == [speed["ours"]]
  assert memory["ours"] == ours["peak_rss"] / 2**20
  table = [l for l in results["markdown"].splitlines() if l.startswith("| ")]
  assert len(table) == 1 + 2 and table[1].startswith("| steps/s | ")  # header + 2 rows
  if has_trl:
    assert sorted(map(int, pair["trl"]["step_times"])) == [1, 2, 3, 4]
    assert pair["trl"]["steps_per_s"] > 0 and pair["trl"]["peak_rss"] > 0
    # One pair: the median of the per-pair ratios is that pair's ratio.
    assert math.isclose(speed["ratio"], ours["steps_per_s"] / pair["trl"]["steps_per_s"],
                        rel_tol=1e-12)
    assert "TRL" in speed["peer_label"]
  else:
    assert pair["trl"] is None and speed["peer"] is None and speed["ratio"] is None
    assert "no venv" in speed["peer_label"]
