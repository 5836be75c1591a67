"""Multi-host runs: 2 local CPU processes (gloo collectives) stand in for 2 hosts.

The SFT binary of the demo configuration runs 5 steps as 2 processes x 2 simulated devices and
as 1 process x 4 devices: the loss trajectories agree within 1e-5, and the 2-process checkpoint
restores in a 1-process run that continues exactly like the uninterrupted 1-process run. The
helpers (environment detection, the process view of the global data stream, the data state of
all hosts) are checked in-process.
"""

import json
import os
import socket
import subprocess
import sys

import grain
import numpy as np
import pytest

from alignment import parallel
from alignment.training import runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIG = """
from experiments.configs.demo import get_config as _base, optimizer

def get_config():
  c = _base()
  c.model.depth = 1
  c.sft.num_demonstrations = 64
  c.sft.batch_size = 8
  c.sft.num_steps = 8
  c.sft.optimizer = optimizer(3e-3, 8, 2)
  c.sft.log_every = 1
  return c
"""


def test_detect_environment():
  assert parallel.detect_environment({}) == "single"
  assert parallel.detect_environment({"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234"}) == "explicit"
  assert parallel.detect_environment({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}) == "tpu"
  assert parallel.detect_environment({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}) == "slurm"
  # One SLURM task is a single process: nothing to connect.
  assert parallel.detect_environment({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) == "single"


def test_initialize_single_process_and_bad_explicit_arguments():
  info = parallel.initialize(environ={})
  assert (info.environment, info.process_index, info.process_count) == ("single", 0, 1)
  with pytest.raises(ValueError, match="need coordinator_address, num_processes and process_id"):
    parallel.initialize(coordinator_address="localhost:1", environ={})
  with pytest.raises(ValueError, match="need coordinator_address"):
    parallel.initialize(environ={"JAX_COORDINATOR_ADDRESS": "localhost:1"})
  with pytest.raises(ValueError, match=r"process_id=2 is not in \[0, num_processes=2\)"):
    parallel.initialize(coordinator_address="localhost:1", num_processes=2, process_id=2)


def test_process_rows_cover_each_global_batch_in_order():
  # G = 6 over P = 3 hosts: L = 2; host i reads global positions 6b + 2i, 6b + 2i + 1.
  stream = grain.MapDataset.source(list(range(10))).shuffle(seed=1)
  views = [parallel.process_rows(stream, 6, process_index=i, process_count=3) for i in range(3)]
  for b in range(4):  # past the first epoch (10 records): a fresh permutation, same on all hosts
    joined = [views[i][2 * b + r] for i in range(3) for r in range(2)]
    assert joined == [stream[6 * b + j] for j in range(6)]
  assert [parallel.process_rows(stream, 6, process_index=0, process_count=1)[k]
          for k in range(12)] == [stream[k] for k in range(12)]
  with pytest.raises(ValueError, match="global batch size 6 must be a positive multiple of the "
                                       r"number of processes \(4\)"):
    parallel.local_batch_size(6, 4)


def test_data_state_of_another_process_count_resumes_the_global_stream():
  from alignment.data import tasks  # pylint: disable=import-outside-toplevel

  task = tasks.get_task("sorting")
  records = [{"prompt": p, "responses": [r], "scores": [1.0]}
             for p, r in task.demonstrations(32, seed=0)]
  straight = runs.batches(records, runs.task_encoding(task), batch_size=4, list_size=1, seed=3)
  want = [next(straight) for _ in range(5)][3:]
  resumed = runs.batches(records, runs.task_encoding(task), batch_size=4, list_size=1, seed=3)
  # What 2 hosts wrote after 3 global batches of 4 (each host read 3 x 2 rows).
  host = {"parent": {"next_index": 6}, "counts": {}}
  resumed.set_state({"process_count": 2, "batches": 3, "processes": [host, host]})
  for expected in want:
    got = next(resumed)
    np.testing.assert_array_equal(got["tokens"], expected["tokens"])
  assert resumed.get_state()["batches"] == 5
  with pytest.raises(ValueError, match="not written by a ProcessDataIterator"):
    resumed.set_state({"parent": {"next_index": 0}})


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _sft(config_file, workdir, devices, *extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.Popen(
      [sys.executable, "-m", "experiments.sft", f"--config={config_file}", f"--workdir={workdir}",
       *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc):
  out, _ = proc.communicate(timeout=400)
  assert proc.returncode == 0, out[-3000:]
  return out


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return {row["step"]: row["loss"] for row in map(json.loads, f)}


def test_two_processes_match_one_and_their_checkpoint_resumes_in_one(tmp_path):
  config_file = tmp_path / "config.py"
  config_file.write_text(CONFIG)
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  address = f"localhost:{_free_port()}"
  procs = [_sft(config_file, one, 4)] + [
      _sft(config_file, two, 2, "--config.sft.num_steps=5", f"--coordinator_address={address}",
           "--num_processes=2", f"--process_id={i}") for i in range(2)]
  outs = [_finish(p) for p in procs]
  # Only process 0 reports progress and writes files.
  assert "[sft] 5/5" in outs[1] and "[sft]" not in outs[2]
  with open(os.path.join(two, runs.MEMORY_FILE), encoding="utf-8") as f:
    memory = json.load(f)
  assert (memory["devices"], memory["processes"]) == (4, 2)
  print("2 processes x 2 devices, train step per device:", memory["per_device"])

  single, double = _losses(one), _losses(two)
  assert sorted(double) == [1, 2, 3, 4, 5]
  np.testing.assert_allclose([double[s] for s in range(1, 6)], [single[s] for s in range(1, 6)],
                             atol=1e-5, rtol=0)
  assert single[5] < single[1]  # it trains

  # The 2-process checkpoint (step 5) restores in one process with 4 devices and continues.
  out = _finish(_sft(config_file, two, 4))
  assert "Resuming from checkpoint step 5" in out
  resumed = _losses(two)
  assert sorted(resumed) == list(range(1, 9))
  np.testing.assert_allclose([resumed[s] for s in (6, 7, 8)], [single[s] for s in (6, 7, 8)],
                             atol=1e-5, rtol=0)
