"""Every sharding strategy trains like one device; FSDP keeps 1/8 of the parameters per device.

`strategies_worker.py` runs 3 SFT steps of the demo configuration (one layer, AdamW) on one device
and under dp, fsdp, dp x tp (2-D mesh) and dp x fsdp x tp (3-D mesh) on 8 simulated CPU devices,
with per-device memory figures from XLA's memory analysis.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, os.path.join(HERE, "strategies_worker.py"),
       str(tmp_path_factory.mktemp("strategies"))],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  for name, r in out.items():
    print(f"{name:8s} losses {r['losses']} | step per device (MiB): " + ", ".join(
        f"{k} {v / 2**20:.3f}" for k, v in r["step_memory"].items())
          + (f" | parameters per device {r['parameter_bytes']} B" if name != "single" else ""))
  return out


@pytest.mark.parametrize("strategy", ["dp", "fsdp", "tp", "fsdp_tp"])
def test_strategy_gives_the_single_device_losses(results, strategy):
  assert len(results[strategy]["losses"]) == 3
  np.testing.assert_allclose(results[strategy]["losses"], results["single"]["losses"],
                             atol=1e-5, rtol=0)


def test_fsdp_keeps_an_eighth_of_the_parameters_per_device(results):
  replicated, fsdp = results["dp"]["parameter_bytes"], results["fsdp"]["parameter_bytes"]
  # Replicated: every float32 parameter of the one-layer decoder on every device.
  assert replicated % 4 == 0 and replicated > 100_000
  assert fsdp / replicated == pytest.approx(1 / 8, rel=0.05)
  # The step's arguments (parameters, AdamW moments, batch) shrink about as much.
  ratio = results["fsdp"]["step_memory"]["argument_bytes"] / results["dp"]["step_memory"][
      "argument_bytes"]
  assert ratio < 0.2
  # Tensor parallelism over 4 devices keeps about a quarter (norm scales stay replicated).
  assert results["tp"]["parameter_bytes"] / replicated == pytest.approx(1 / 4, rel=0.15)
