"""Unpaired objectives through the preference trainer: KTO's mismatched pairs, BCO's state.

The mismatched batch is checked against a hand-built example and against `collate` of the
mismatched records; the trainer's KTO / BCO loss on a small decoder (mismatched pairs and
running moments built inside it) is checked against the objectives' formulas evaluated in numpy
on log-probs from separate forwards. The end-to-end tests through
`alignment.recipes.preference_training` (unpaired data file, a whole train step, resume of BCO's
running moments) are marked slow.
"""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from alignment.data import batching
from alignment import losses
from alignment.recipes import config as config_lib
from alignment.recipes import preference_training, preferences, sft
from alignment.training import loop, objective, runs, setup
from experiments import _flags
from experiments.configs import demo
from experiments.studies import binary_feedback, common
from tests.references import NpRunningMoments

BETA = 0.5


def _example(prompt, responses, labels):
  return {"prompt": np.asarray(prompt, np.int32),
          "responses": tuple(np.asarray(r, np.int32) for r in responses),
          "labels": np.asarray(labels, np.float32)}


def test_mismatched_batch_by_hand():
  # Prompts [1, 2], [3], [4, 5, 6]; responses [7, 8, 9], [10], [11, 12]; T = 3 + 3 = 6.
  # Row i gets the response of row i − 1 (row 0 that of row 2):
  #   [1, 2, 11, 12, 0, 0], [3, 7, 8, 9, 0, 0], [4, 5, 6, 10, 0, 0].
  examples = [_example([1, 2], [[7, 8, 9]], [1]), _example([3], [[10]], [0]),
              _example([4, 5, 6], [[11, 12]], [1])]
  out = batching.mismatched_batch(batching.collate(examples, pad_id=0), pad_id=0)
  np.testing.assert_array_equal(out["tokens"][:, 0], [[1, 2, 11, 12, 0, 0], [3, 7, 8, 9, 0, 0],
                                                      [4, 5, 6, 10, 0, 0]])
  np.testing.assert_array_equal(out["completion_mask"][:, 0], [[0, 0, 1, 1, 0, 0],
                                                               [0, 1, 1, 1, 0, 0],
                                                               [0, 0, 0, 1, 0, 0]])
  np.testing.assert_array_equal(out["positions"][:, 0], [[0, 1, 2, 3, 0, 0]] * 3)
  np.testing.assert_array_equal(out["segment_ids"][:, 0], [[1, 1, 1, 1, 0, 0]] * 3)
  np.testing.assert_array_equal(out["labels"][:, 0], [1, 1, 0])
  np.testing.assert_array_equal(out["response_lengths"][:, 0], [2, 3, 1])


def test_mismatched_batch_equals_collate_of_the_mismatched_records():
  # K = 2 with a padded slot in row 1; fixed sizes P = 4, R = 4 and pad id 9.
  examples = [_example([1, 2], [[3, 4, 5], [6]], [1, 0]), _example([7], [[8, 8]], [0]),
              _example([2, 2, 2], [[5], [4, 4, 4, 4]], [0, 1])]
  config = batching.BatchConfig(max_prompt_tokens=4, max_response_tokens=4, list_size=2)
  swapped = [_example(e["prompt"], examples[i - 1]["responses"], examples[i - 1]["labels"])
             for i, e in enumerate(examples)]
  expected = batching.collate(swapped, config=config, pad_id=9)
  out = batching.mismatched_batch(batching.collate(examples, config=config, pad_id=9), pad_id=9)
  assert sorted(out) == sorted(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(np.asarray(out[key]), value, err_msg=key)
  with pytest.raises(ValueError, match="packed"):
    batching.mismatched_batch(batching.pack(examples, config=config))


def test_kto_needs_a_reference_forward_and_the_pointwise_objectives_are_supported():
  with pytest.raises(ValueError, match="reference='forward'"):
    objective.check_objective_supported("kto", "cache")
  for name in ("kto", "bco", "apo_zero_unpaired", "ulma", "pointwise_dpo", "pointwise_sigmoid"):
    objective.check_objective_supported(name, "forward")
  for name in ("bco", "apo_zero_unpaired"):
    objective.check_objective_supported(name, "cache")


# ------------------------------------------------------------------------- the trainer's loss

_RECORDS = [("65230001:", "0002306", 1.0), ("928603:", "062368", 0.0), ("5024:", "0245", 1.0),
            ("400106:", "00146", 0.0), ("50778108:", "100577488", 0.0), ("7712:", "1277", 1.0)]


@pytest.fixture(scope="module")
def tiny():
  task, model_config = config_lib.task_and_model(config_lib.Task(), config_lib.Model())
  logp_fn = setup.logp_fn(model_config, chunk_size=256)
  jitted = jax.jit(logp_fn)
  # Seeds chosen so that the mismatched pairs' mean log-ratio is > 0 (z0 is not clamped).
  policy, ref = runs.init_model(model_config, 1), runs.init_model(model_config, 0)

  def batch_of(rows):
    records = [{"prompt": p, "responses": [c], "scores": [y]} for p, c, y in rows]
    (batch,) = runs.fixed_batches(records, runs.task_encoding(task), batch_size=len(records),
                                  list_size=1)
    return batch

  def loss_of(name):
    """The trainer's loss of `name`, jitted: `(batch, loss_state) -> (loss, new state, aux)`."""
    loss_fn = jax.jit(objective.preference_loss(
        name, logp_fn, reference="forward", hyper_parameters={"beta": BETA},
        ref_logp_fn=logp_fn, pad_id=task.tokenizer.pad_id))

    def fn(rows, loss_state=()):
      (total, count), (new_state, aux) = loss_fn(
          policy, batch_of(rows), loss_state, ref, jax.random.key(0))
      assert float(count) == len(rows)
      return float(total / count), new_state, {k: float(s / c) for k, (s, c) in aux.items()}

    return fn

  return dict(
      policy=policy, ref=ref, loss_of=loss_of,
      logps=lambda params, rows: np.asarray(jitted(params, batch_of(rows))[0], np.float64)[:, 0])


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def test_kto_trainer_loss_equals_the_formula_on_separate_forwards(tiny):
  rows = _RECORDS
  lp, lr = tiny["logps"](tiny["policy"], rows), tiny["logps"](tiny["ref"], rows)
  # Mismatched records: prompt i with the completion (and label) of row i − 1.
  mismatched = [(p, rows[i - 1][1], rows[i - 1][2]) for i, (p, _, _) in enumerate(rows)]
  kl = tiny["logps"](tiny["policy"], mismatched) - tiny["logps"](tiny["ref"], mismatched)
  z0 = max(0.0, kl.mean())
  assert z0 > 0.1  # the clamp is inactive: this checks the mismatched forwards themselves
  rho, desirable = lp - lr, np.array([y for _, _, y in rows]) == 1.0
  expected = np.where(desirable, 1 - 1 / (1 + np.exp(-BETA * (rho - z0))),
                      1 - 1 / (1 + np.exp(-BETA * (z0 - rho)))).mean()
  loss, _, aux = tiny["loss_of"]("kto")(rows)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(aux["kl"], z0, rtol=1e-5)


def test_bco_trainer_loss_and_running_moments_equal_numpy(tiny):
  spec = losses.spec("bco")
  state, moments = spec.init_state(), NpRunningMoments()
  loss_fn = tiny["loss_of"]("bco")
  flipped = [(p, c, 1.0 - y) for p, c, y in _RECORDS[::-1]]
  for rows in (_RECORDS, flipped):
    r = BETA * (tiny["logps"](tiny["policy"], rows) - tiny["logps"](tiny["ref"], rows))
    moments.update(r)
    mean = moments.mean
    desirable = np.array([y for _, _, y in rows]) == 1.0
    expected = np.where(desirable, -_log_sigmoid(r - mean), -_log_sigmoid(-(r - mean))).mean()
    loss, state, _ = loss_fn(rows, state)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose([float(x) for x in state],
                               [moments.mean, moments.var, moments.count], rtol=1e-5)


# ------------------------------------------------------------------------- end to end (slow)


@pytest.fixture(scope="module")
def unpaired_data(tmp_path_factory):
  root = tmp_path_factory.mktemp("unpaired")
  config = demo.get_config()
  config.sft.update(num_demonstrations=64, batch_size=8, num_steps=4)
  config.sft.optimizer.update(total_steps=4, warmup_steps=0, schedule="constant")
  config.preferences.update(num_prompts=16, batch_size=32, k=2)
  config.train.update(batch_size=8, num_steps=6, checkpoint_every=3, log_every=1)
  config.train.optimizer.update(total_steps=6, warmup_steps=0)
  sft.run(_flags.typed(sft.Config, config), str(root / "sft"))
  config.preferences.policy = str(root / "sft")
  preferences.run(_flags.typed(preferences.Config, config), str(root / "prefs"))
  with open(root / "prefs" / preferences.DATA_FILE, encoding="utf-8") as f:
    pairs = [json.loads(line) for line in f]
  data = str(root / "thumbs.jsonl")
  common.write_records(binary_feedback.unpaired_from_pairs(pairs, seed=0), data)
  config.train.init, config.train.data = str(root / "sft"), data
  return root, _flags.typed(preference_training.Config, config)


def _objective(config, name: str, **train):
  """`config` training the objective `name` (β = BETA) with `train` fields replaced."""
  config = dataclasses.replace(config, loss=config_lib.Loss(name, {"beta": BETA}))
  return config_lib.replace_in(config, "train", **train)


def _params_bytes(workdir):
  with open(os.path.join(workdir, setup.PARAMS_FILE), "rb") as f:
    return f.read()


@pytest.mark.slow
def test_unpaired_objectives_train_from_an_unpaired_file(unpaired_data):
  root, config = unpaired_data
  for name, reference in (("kto", "forward"), ("bco", "cache"), ("apo_zero_unpaired", "cache")):
    workdir = str(root / name)
    preference_training.run(_objective(config, name, reference=reference), workdir)
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
      logged = [json.loads(line) for line in f]
    losses_ = [row["loss"] for row in logged if "loss" in row]
    assert len(losses_) == 6 and np.all(np.isfinite(losses_))
    assert _params_bytes(workdir) != _params_bytes(config.train.init)
    if name == "kto":
      assert all(row["kl"] >= 0.0 for row in logged if "kl" in row)
  with pytest.raises(ValueError, match="cannot be cached"):
    preference_training.run(_objective(config, "kto"), str(root / "kto_cache"))


@pytest.mark.slow
def test_bco_running_moments_are_checkpointed_and_resumed(unpaired_data, monkeypatch):
  root, config = unpaired_data
  run_config = _objective(config, "bco")
  # The same optimiser schedule (total_steps = 6), stopped at step 3.
  half = config_lib.replace_in(run_config, "train", num_steps=3)
  restored, forget = [], []
  real_restore = loop.restore_or_init

  def spy(checkpointer, state, iterator):
    state, resumed = real_restore(checkpointer, state, iterator)
    if forget:  # the mutant: a resume that drops the running moments
      state = state.replace(loss_state=losses.spec("bco").init_state())
    restored.append((resumed, float(state.loss_state.count)))
    return state, resumed

  monkeypatch.setattr(loop, "restore_or_init", spy)
  straight, resumed, mutant = (str(root / f"bco_{n}") for n in ("straight", "resumed", "mutant"))
  preference_training.run(run_config, straight)
  preference_training.run(half, resumed)
  preference_training.run(run_config, resumed)  # resumes from the step-3 checkpoint
  # The checkpoint holds the moments of 3 steps × 8 responses (count 1e−24 + 24).
  assert restored == [(False, pytest.approx(1e-24)), (False, pytest.approx(1e-24)), (True, 24.0)]
  assert _params_bytes(resumed) == _params_bytes(straight)
  preference_training.run(half, mutant)
  forget.append(True)
  preference_training.run(run_config, mutant)
  # Restarting from the initial moments (μ = 0) shifts δ and changes the updates.
  assert _params_bytes(mutant) != _params_bytes(straight)
