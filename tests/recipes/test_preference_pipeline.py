"""The SFT, preference, preference-training and evaluation recipes and their binaries end to end
on a tiny configuration: exact resume after a hard kill, clear errors, curricula, meshes, LoRA,
online rounds, evaluation.

One module-scoped fixture runs a few SFT steps and samples a small preference dataset; the tests
then train on it. A run killed with SIGKILL after step 10 and resumed must end with parameters
bitwise identical to an uninterrupted 20-step run (data order included).
"""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from alignment.data import curriculum
from alignment.recipes import demo, evaluation, preference_training, preferences, sft
from alignment.recipes.config import from_dict, replace_in, select, task_and_model
from alignment.training import logs
from experiments.configs import demo as demo_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY_OVERRIDES = """
c.sft.num_demonstrations = 64
c.sft.batch_size = 8
c.sft.num_steps = 4
c.sft.optimizer = optimizer(1e-3, 4)
c.preferences.num_prompts = 24
c.preferences.batch_size = 32
c.train.batch_size = 4
c.train.num_steps = 20
c.train.optimizer = optimizer(1e-3, 20, 2)
c.train.checkpoint_every = 5
c.train.keep_checkpoints = 3
c.train.log_every = 5
"""


def tiny_config() -> demo.Config:
  """The demo's config with the overrides above, as the binaries would build it."""
  c = demo_config.get_config()
  exec(TINY_OVERRIDES, {"c": c, "optimizer": demo_config.optimizer})  # pylint: disable=exec-used
  return from_dict(demo.Config, c.to_dict())


def train_config(config: demo.Config, **changes) -> preference_training.Config:
  """The preference-training recipe's config taken from `config`, `train` fields changed."""
  return replace_in(select(preference_training.Config, config), "train", **changes)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("binaries")
  config = tiny_config()
  sft.run(select(sft.Config, config), str(root / "sft"))
  prefs = preferences.run(
      replace_in(select(preferences.Config, config), "preferences", policy=str(root / "sft")),
      str(root / "prefs"))
  config = replace_in(config, "train", init=str(root / "sft"), data=prefs.path)
  config_file = root / "tiny_config.py"
  body = (TINY_OVERRIDES + f"c.train.init = {config.train.init!r}\n"
          f"c.train.data = {config.train.data!r}\n")
  config_file.write_text(
      "from experiments.configs.demo import get_config as _base, optimizer\n\n"
      "def get_config():\n  c = _base()\n" + textwrap.indent(body, "  ") + "  return c\n"
  )
  return root, config, str(config_file)


def _params_bytes(workdir):
  with open(os.path.join(workdir, "params.msgpack"), "rb") as f:
    return f.read()


def test_resume_after_hard_kill_is_bitwise_exact(prepared):
  root, config, config_file = prepared
  straight = str(root / "straight")
  preference_training.run(train_config(config), straight)

  killed = str(root / "killed")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", f"--config={config_file}",
       f"--workdir={killed}", "--config.train.kill_after_step=10"],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
  )
  assert proc.returncode == -9, proc.stderr[-3000:]
  assert not os.path.exists(os.path.join(killed, "params.msgpack"))
  # A second kill during a later checkpoint write leaves an unfinished step behind.
  os.makedirs(os.path.join(killed, "checkpoints", "15.orbax-checkpoint-tmp-1"))
  preference_training.run(train_config(config), killed)

  assert _params_bytes(killed) == _params_bytes(straight)
  resumed_rows = logs.read_metrics(killed)
  straight_rows = logs.read_metrics(straight)
  # Steps 5 and 10 were logged before the kill, 15 and 20 after the resume: same values.
  assert [r["step"] for r in resumed_rows] == [5, 10, 15, 20]
  assert [r["loss"] for r in resumed_rows] == [r["loss"] for r in straight_rows]


def test_unknown_objective_is_a_clear_error(prepared, tmp_path):
  _, config, _ = prepared
  with pytest.raises(KeyError, match="Unknown objective 'dpoo'. Did you mean 'dpo'.*? Known "
                     "objectives: .*lipo_lambda"):  # when the config is built, before training
    preference_training.run(replace_in(train_config(config), "loss", name="dpoo"), str(tmp_path))


@pytest.mark.parametrize("rule", ["best_vs_worst", "all_pairs"])
def test_pairwise_objective_on_lists_trains_on_their_pairs(prepared, tmp_path, rule):
  """DPO on K = 4 lists: the lists are binarised by `train.pairs` and the run trains on pairs."""
  from alignment.data import formats  # pylint: disable=import-outside-toplevel

  _, config, _ = prepared
  config = replace_in(train_config(config, num_steps=2, pairs=rule), "loss", name="dpo")
  workdir = str(tmp_path / rule)
  preference_training.run(config, workdir)
  with open(os.path.join(workdir, "data_stats.json"), encoding="utf-8") as f:
    counts = json.load(f)["counts"]
  lists = list(formats.read_records(config.train.data, layout="listwise"))
  expected = formats.binarize(lists, rule)
  assert counts["binarize_lists"] == len(lists) and counts["binarize_pairs"] == len(expected)
  assert len(expected) > len(lists) if rule == "all_pairs" else len(expected) <= len(lists)
  assert [r["step"] for r in logs.read_metrics(workdir)] == [2]


def test_cached_reference_logps_equal_a_reference_forward(prepared, tmp_path):
  """Cached values ride with their records through shuffling and batching."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from alignment.training import runs, setup  # pylint: disable=import-outside-toplevel

  _, config, _ = prepared
  task, model_config = task_and_model(config.task, config.model)
  params = setup.load_params(runs.init_model(model_config, 0), config.train.init)
  records, _ = preference_training.read_preferences(config.train.data, str(tmp_path))
  logp_fn = setup.logp_fn(model_config, chunk_size=config.model.logprob_chunk)
  encoding = runs.task_encoding(task)
  with_ref = runs.attach_reference_logps(
      records, encoding, logp_fn, params, list_size=4, batch_size=16, cache_dir=str(tmp_path))
  batch = next(runs.batches(with_ref, encoding, batch_size=8, list_size=4, seed=3))
  direct = np.asarray(jax.jit(logp_fn)(params, batch)[0])
  np.testing.assert_allclose(
      np.where(batch["where"], batch["ref_logps"], 0), np.where(batch["where"], direct, 0),
      atol=1e-5, rtol=0)


def test_curry_dpo_curriculum_refreshes_the_reference(prepared, tmp_path):
  import glob  # pylint: disable=import-outside-toplevel

  from alignment.training import runs, setup  # pylint: disable=import-outside-toplevel

  import jax  # pylint: disable=import-outside-toplevel

  _, config, _ = prepared
  config = replace_in(train_config(config, curriculum="rank", num_steps=6), "loss", name="dpo",
                      hyper_parameters={"beta": 0.1})
  workdir = str(tmp_path / "curry")
  final = preference_training.run(config, workdir)
  records, _ = preference_training.read_preferences(config.train.data, str(tmp_path))
  stages = curriculum.stage_records(records, "rank")
  assert len(stages) == 3  # K = 4: rejected response at rank 4, 3, 2
  # Stage s pairs each list's best response with its response ranked K - s (stage 0: the worst).
  by_prompt = {r["prompt"]: r for r in records}
  for s, stage in enumerate(stages):
    gaps = []
    for pair in stage:
      source = by_prompt[pair["prompt"]]
      scores = np.asarray(source["scores"])
      order = np.argsort(-scores, kind="stable")
      assert pair["responses"][0] == source["responses"][order[0]]
      assert pair["responses"][1] == source["responses"][order[len(order) - 1 - s]]
      assert pair["scores"] == [1.0, 0.0]
      gaps.append(scores[order[0]] - scores[order[len(order) - 1 - s]])
    assert gaps == sorted(gaps, reverse=True)  # easy (large gap) to hard within a stage
  assert _params_bytes(workdir) == _params_bytes(os.path.join(workdir, "stage_2"))
  task, model_config = task_and_model(config.task, config.model)
  template = runs.init_model(model_config, 0)
  stage0 = setup.load_params(template, os.path.join(workdir, "stage_0"))
  logp_fn = setup.logp_fn(model_config, chunk_size=config.model.logprob_chunk)
  expected = runs.attach_reference_logps(
      stages[1], runs.task_encoding(task), logp_fn, stage0, list_size=2, batch_size=16,
      cache_dir=str(tmp_path / "expected"))
  (cached,) = glob.glob(os.path.join(workdir, "stage_1", "ref_cache", "*.npy"))
  np.testing.assert_allclose(
      np.load(cached), np.array([r["ref_logps"] for r in expected]), atol=1e-5, rtol=0)
  # The returned parameters are the last stage's, also written to the workdir.
  stage2 = setup.load_params(template, os.path.join(workdir, "stage_2"))
  for a, b in zip(jax.tree.leaves(final.params), jax.tree.leaves(stage2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert final.params_path == os.path.join(workdir, "params.msgpack")


@pytest.mark.parametrize("strategy,shape", [("dp", "data=4"), ("fsdp", "fsdp=4")])
def test_training_on_four_simulated_devices_matches_one(prepared, tmp_path, strategy, shape):
  """The same 5 steps under data parallelism or FSDP on 4 CPU devices give the same parameters.

  Plain SGD: Adam would turn float-rounding noise in near-zero gradients (rows of unused tokens)
  into full-size steps and hide what the test is about, the sharded computation.
  """
  import flax.serialization  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  root, config, config_file = prepared
  single = str(root / "single5")
  if not os.path.exists(os.path.join(single, "params.msgpack")):
    config = train_config(config, num_steps=5)
    config = replace_in(config, "train", optimizer=dataclasses.replace(
        config.train.optimizer, name="sgd"))
    preference_training.run(config, single)
  axis, size = shape.split("=")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  sharded = str(tmp_path / strategy)
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", f"--config={config_file}",
       f"--workdir={sharded}", "--config.train.num_steps=5", "--config.train.optimizer.name=sgd",
       f"--config.mesh.strategy={strategy}",
       f"--config.mesh.shape={{'{axis}': {size}}}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  a = jax.tree.leaves(flax.serialization.msgpack_restore(_params_bytes(single)))
  b = jax.tree.leaves(flax.serialization.msgpack_restore(_params_bytes(sharded)))
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, atol=2e-5, rtol=0)


def test_lora_trains_adapters_only_with_the_base_as_reference(prepared, tmp_path):
  """reference='lora': only adapted projections move; the export is the merged decoder."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from alignment.training import runs, setup  # pylint: disable=import-outside-toplevel

  _, config, _ = prepared
  config = train_config(config, reference="lora", num_steps=5,
                        lora=preference_training.Lora(rank=4))
  workdir = str(tmp_path / "lora")
  merged = preference_training.run(config, workdir).params
  _, model_config = task_and_model(config.task, config.model)
  base = setup.load_params(runs.init_model(model_config, 0), config.train.init)
  delta = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       merged, base)
  flat = {"/".join(str(k.key) for k in path): v
          for path, v in jax.tree_util.tree_flatten_with_path(delta)[0]}
  assert flat["embed/embedding"] == 0.0 and flat["final_norm/scale"] == 0.0
  assert flat["layers_0/attn/q/kernel"] > 0.0  # adapted projections moved
  # The exported parameters are the merged model, loadable as a plain decoder.
  exported = setup.load_params(runs.init_model(model_config, 0), workdir)
  for a, b in zip(jax.tree.leaves(exported), jax.tree.leaves(merged)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert [r["step"] for r in logs.read_metrics(workdir)] == [5]


def test_online_rounds_sample_from_the_current_policy(prepared, tmp_path):
  _, config, _ = prepared
  config = train_config(config, online_rounds=2, num_steps=4)
  workdir = str(tmp_path / "online")
  preference_training.run(config, workdir)
  for i in (0, 1):
    stage = os.path.join(workdir, f"stage_{i}")
    assert os.path.exists(os.path.join(stage, "preferences", preferences.DATA_FILE))
    assert [r["step"] for r in logs.read_metrics(stage)] == [2]
  # Round 1's lists were sampled from round 0's policy, not from the SFT policy.
  first = open(os.path.join(workdir, "stage_0", "preferences", preferences.DATA_FILE)).read()
  second = open(os.path.join(workdir, "stage_1", "preferences", preferences.DATA_FILE)).read()
  assert first != second
  assert _params_bytes(workdir) == _params_bytes(os.path.join(workdir, "stage_1"))


@pytest.mark.slow
def test_evaluation_of_a_policy_against_itself(prepared, tmp_path):
  """Policy = reference: KL exactly 0, a win rate whose interval holds 1/2, and per-attribute
  win rates and good fractions equal to numpy over the same samples drawn again."""
  import jax  # pylint: disable=import-outside-toplevel

  from alignment.training import generation, runs, setup  # pylint: disable=import-outside-toplevel

  _, config, _ = prepared
  sft_dir = config.train.init
  config = replace_in(select(evaluation.Config, config), "evaluate", num_prompts=32,
                      heldout_preferences=4, batch_size=32, policy=sft_dir, reference=sft_dir)
  summary = evaluation.run(config, str(tmp_path))
  assert summary["kl_policy_reference"] == 0.0
  low, high = summary["win_rate_ci95"]
  assert low <= 0.5 <= high

  task, model_config = task_and_model(config.task, config.model)
  params = setup.load_params(runs.init_model(model_config, 0), sft_dir)
  prompts = task.prompts("heldout", 32, seed=config.seed)
  key = jax.random.key(config.seed + 777)
  texts = [
      [r[0] for r in generation.sample_responses(
          model_config, params, task.tokenizer, prompts, k, num_samples=1,
          max_prompt_length=task.max_prompt_length + 1,
          max_new_tokens=task.max_response_length + 1, temperature=1.0, batch_size=32)[0]]
      for k in (key, jax.random.fold_in(key, 1))]
  policy, reference = (task.attributes_batch(prompts, t) for t in texts)
  optimum = task.attributes_batch(prompts, [task.optimum(p) for p in prompts])
  for a in policy:
    wins = np.mean((policy[a] > reference[a]) + 0.5 * (policy[a] == reference[a]))
    assert summary["attribute_win_rate"][a] == pytest.approx(wins)
    assert summary["good_fraction"]["policy"][a] == pytest.approx(
        np.mean(policy[a] >= optimum[a] - 1e-9))
  both = np.logical_and.reduce([policy[a] >= optimum[a] - 1e-9 for a in policy])
  assert summary["good_fraction"]["policy"]["all"] == pytest.approx(np.mean(both))


@pytest.mark.slow
def test_demo_chains_the_stages_and_writes_its_report(tmp_path):
  config = tiny_config()
  config = replace_in(config, "evaluate", num_prompts=32, heldout_preferences=4, batch_size=32)
  workdir = str(tmp_path / "demo")
  report = demo.run(config, workdir)
  with open(os.path.join(workdir, "eval", "eval.json"), encoding="utf-8") as f:
    summary = json.load(f)
  assert report["evaluation"] == summary and report["win_rate"] == summary["win_rate"]
  with open(os.path.join(workdir, "report.json"), encoding="utf-8") as f:
    assert json.load(f)["win_rate"] == report["win_rate"]
  assert os.path.getsize(os.path.join(workdir, "report.png")) > 0
  assert from_dict(demo.Config, report["config"]) == config  # the report holds the config
  assert _params_bytes(os.path.join(workdir, "train")) != _params_bytes(
      os.path.join(workdir, "sft"))
