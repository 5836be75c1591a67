"""The binaries end to end on a tiny configuration: exact resume after a hard kill, clear errors.

One module-scoped fixture runs a few SFT steps and samples a small preference dataset; the tests
then train on it. A run killed with SIGKILL after step 10 and resumed must end with parameters
bitwise identical to an uninterrupted 20-step run (data order included).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from alignment.training import logs
from experiments import evaluate, make_preferences, sft, train
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


def tiny_config():
  c = demo_config.get_config()
  exec(TINY_OVERRIDES, {"c": c, "optimizer": demo_config.optimizer})  # pylint: disable=exec-used
  return c


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("binaries")
  config = tiny_config()
  sft.run(config, str(root / "sft"))
  make_preferences.run(config, str(root / "prefs"), policy=str(root / "sft"))
  config.train.init = str(root / "sft")
  config.train.data = str(root / "prefs" / make_preferences.DATA_FILE)
  config_file = root / "tiny_config.py"
  body = TINY_OVERRIDES + f"c.train.init = {config.train.init!r}\nc.train.data = {config.train.data!r}\n"
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
  train.run(config, straight)

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
  train.run(config, killed)

  assert _params_bytes(killed) == _params_bytes(straight)
  resumed_rows = logs.read_metrics(killed)
  straight_rows = logs.read_metrics(straight)
  # Steps 5 and 10 were logged before the kill, 15 and 20 after the resume: same values.
  assert [r["step"] for r in resumed_rows] == [5, 10, 15, 20]
  assert [r["loss"] for r in resumed_rows] == [r["loss"] for r in straight_rows]


def test_unknown_objective_is_a_clear_error(prepared, tmp_path):
  _, config, _ = prepared
  config = config.copy_and_resolve_references()
  config.loss.name = "dpoo"
  with pytest.raises(KeyError, match="Unknown objective 'dpoo'. Known objectives: .*lipo_lambda"):
    train.run(config, str(tmp_path))


def test_pairwise_objective_on_lists_is_a_clear_error(prepared, tmp_path):
  _, config, _ = prepared
  config = config.copy_and_resolve_references()
  config.loss.name = "dpo"
  with pytest.raises(ValueError, match="pairwise but the data has lists"):
    train.run(config, str(tmp_path))


def test_cached_reference_logps_equal_a_reference_forward(prepared, tmp_path):
  """Cached values ride with their records through shuffling and batching."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from alignment.training import runs, setup  # pylint: disable=import-outside-toplevel

  _, config, _ = prepared
  task, model_config = runs.task_and_model(config)
  params = setup.load_params(runs.init_model(model_config, 0), config.train.init)
  records, _ = train.read_preferences(config.train.data, str(tmp_path))
  logp_fn = setup.logp_fn(model_config, chunk_size=config.model.logprob_chunk)
  with_ref = runs.attach_reference_logps(
      records, task, logp_fn, params, list_size=4, batch_size=16, cache_dir=str(tmp_path))
  batch = next(runs.batches(with_ref, task, batch_size=8, list_size=4, seed=3))
  direct = np.asarray(jax.jit(logp_fn)(params, batch)[0])
  np.testing.assert_allclose(
      np.where(batch["where"], batch["ref_logps"], 0), np.where(batch["where"], direct, 0),
      atol=1e-5, rtol=0)


def test_curry_dpo_curriculum_refreshes_the_reference(prepared, tmp_path):
  import glob  # pylint: disable=import-outside-toplevel

  import numpy as np  # pylint: disable=import-outside-toplevel

  from alignment.training import runs, setup  # pylint: disable=import-outside-toplevel

  _, config, _ = prepared
  config = config.copy_and_resolve_references()
  config.loss.name, config.loss.beta = "dpo", 0.1
  config.train.curriculum, config.train.num_steps = "rank", 6
  workdir = str(tmp_path / "curry")
  final = train.run(config, workdir)
  records, _ = train.read_preferences(config.train.data, str(tmp_path))
  stages = train.curriculum_stages(records, "rank")
  assert len(stages) == 3  # K = 4: rejected response at rank 4, 3, 2
  # Stage 0 pairs the best with the worst response: the largest rating gaps come first.
  assert all(r["scores"] == [1.0, 0.0] for s in stages for r in s)
  assert _params_bytes(workdir) == _params_bytes(os.path.join(workdir, "stage_2"))
  task, model_config = runs.task_and_model(config)
  template = runs.init_model(model_config, 0)
  stage0 = setup.load_params(template, os.path.join(workdir, "stage_0"))
  logp_fn = setup.logp_fn(model_config, chunk_size=config.model.logprob_chunk)
  expected = runs.attach_reference_logps(
      stages[1], task, logp_fn, stage0, list_size=2, batch_size=16,
      cache_dir=str(tmp_path / "expected"))
  (cached,) = glob.glob(os.path.join(workdir, "stage_1", "ref_cache", "*.npy"))
  np.testing.assert_allclose(
      np.load(cached), np.array([r["ref_logps"] for r in expected]), atol=1e-5, rtol=0)
  assert final is not None


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
    config = config.copy_and_resolve_references()
    config.train.num_steps = 5
    config.train.optimizer.name = "sgd"
    train.run(config, single)
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
  config = config.copy_and_resolve_references()
  config.train.lora.rank, config.train.reference, config.train.num_steps = 4, "lora", 5
  workdir = str(tmp_path / "lora")
  merged = train.run(config, workdir)
  _, model_config = runs.task_and_model(config)
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
  config = config.copy_and_resolve_references()
  config.train.online_rounds, config.train.num_steps = 2, 4
  workdir = str(tmp_path / "online")
  train.run(config, workdir)
  for i in (0, 1):
    stage = os.path.join(workdir, f"stage_{i}")
    assert os.path.exists(os.path.join(stage, "preferences", make_preferences.DATA_FILE))
    assert [r["step"] for r in logs.read_metrics(stage)] == [2]
  # Round 1's lists were sampled from round 0's policy, not from the SFT policy.
  first = open(os.path.join(workdir, "stage_0", "preferences", make_preferences.DATA_FILE)).read()
  second = open(os.path.join(workdir, "stage_1", "preferences", make_preferences.DATA_FILE)).read()
  assert first != second
  assert _params_bytes(workdir) == _params_bytes(os.path.join(workdir, "stage_1"))


def test_attribute_win_rates_by_hand():
  policy = {"correctness": np.array([1.0, 0.5, 0.2]), "harmlessness": np.array([1.0, 1.0, 1.0])}
  reference = {"correctness": np.array([0.5, 0.5, 0.3]),
               "harmlessness": np.array([1.0, 0.0, 1.0])}
  # correctness: win, tie, loss -> (1 + 0.5 + 0) / 3 = 0.5; harmlessness: tie, win, tie -> 2/3.
  assert evaluate.attribute_win_rates(policy, reference) == pytest.approx(
      {"correctness": 0.5, "harmlessness": 2 / 3})
  with pytest.raises(ValueError, match="attributes"):
    evaluate.attribute_win_rates(policy, {"correctness": reference["correctness"]})


def test_good_fractions_by_hand():
  values = {"c": np.array([1.0, 0.8, 0.6, 0.8]), "h": np.array([0.5, 1.0, 1.0, 1.0])}
  optimum = {"c": np.array([0.8, 0.8, 0.8, 0.7]), "h": np.ones(4)}
  # good c: [T, T (equal), F, T] = 3/4; good h: [F, T, T, T] = 3/4; both: [F, T, F, T] = 1/2.
  assert evaluate.good_fractions(values, optimum) == {"c": 0.75, "h": 0.75, "all": 0.5}
  with pytest.raises(ValueError, match="attributes"):
    evaluate.good_fractions(values, {"c": optimum["c"]})


@pytest.mark.slow
def test_evaluate_reports_per_attribute_win_rates_and_good_fractions(prepared, tmp_path):
  _, config, _ = prepared
  config = config.copy_and_resolve_references()
  config.evaluate.update(num_prompts=32, heldout_preferences=4, batch_size=32)
  sft_dir = config.train.init
  summary = evaluate.run(config, str(tmp_path), policy=sft_dir, reference=sft_dir)
  for key in ("win_rate", "win_rate_ci95", "mean_reward", "attributes", "kl_policy_reference",
              "ranking_accuracy_heldout"):  # the existing keys stay
    assert key in summary
  assert set(summary["attribute_win_rate"]) == {"correctness", "harmlessness"}
  assert all(0.0 <= w <= 1.0 for w in summary["attribute_win_rate"].values())
  for side in ("policy", "reference"):
    good = summary["good_fraction"][side]
    assert 0.0 <= good["all"] <= min(good["correctness"], good["harmlessness"]) <= 1.0
