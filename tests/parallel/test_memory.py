"""Per-device memory of compiled programs from XLA's memory analysis.

Single-device figures are worked out from the array sizes; per-device figures of sharded arrays
run in a subprocess on 4 simulated CPU devices (the device count is fixed when jax starts).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from alignment import parallel


def _compile(donate):
  fn = jax.jit(lambda x, y: 2.0 * x + jnp.sum(y), donate_argnums=(0,) if donate else ())
  return fn.lower(jnp.zeros(256, jnp.float32), jnp.zeros(128, jnp.float32)).compile()


@pytest.mark.parametrize("donate", [False, True])
def test_memory_report_of_a_small_program(donate):
  # Arguments 256 + 128 float32 = 1536 B; output 256 float32 = 1024 B, which reuses the donated
  # `x` (alias 1024 B) when x is donated.
  report = parallel.memory_report(_compile(donate))
  assert report["argument_bytes"] == 1536 and report["output_bytes"] == 1024
  assert report["alias_bytes"] == (1024 if donate else 0)
  assert report["temp_bytes"] >= 0
  assert report["peak_bytes"] == 1536 + 1024 - report["alias_bytes"] + report["temp_bytes"]


def test_memory_report_without_an_analysis_is_an_error():
  class NoAnalysis:
    def memory_analysis(self):
      return None

  with pytest.raises(ValueError, match="no memory analysis"):
    parallel.memory_report(NoAnalysis())


def test_parameter_bytes_on_one_device_is_the_array_size():
  # [8, 16] float32 (512 B) + [3] bfloat16 (6 B), given abstractly: nothing is allocated.
  tree = {"w": jax.ShapeDtypeStruct((8, 16), jnp.float32),
          "b": jax.ShapeDtypeStruct((3,), jnp.bfloat16)}
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  assert parallel.parameter_bytes(tree, {"w": sharding, "b": sharding}) == 518


_SHARDED = """
import json
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from alignment import parallel
mesh = parallel.make_mesh({"fsdp": 4})
tree = {"w": jax.ShapeDtypeStruct((8, 16), jnp.float32)}
out = {spec: parallel.parameter_bytes(tree, {"w": NamedSharding(mesh, P(*axes))})
       for spec, axes in (("replicated", ()), ("rows", ("fsdp",)), ("cols", (None, "fsdp")))}
print(json.dumps(out))
"""


def test_parameter_bytes_per_device_of_sharded_arrays():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  # 8 x 16 float32 = 512 B: whole on every device when replicated, a quarter when split 4 ways.
  assert json.loads(result.stdout.splitlines()[-1]) == {"replicated": 512, "rows": 128,
                                                         "cols": 128}
