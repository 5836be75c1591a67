"""Device meshes with the named axes (data, fsdp, tensor): sizes, the free axis, errors.

Meshes over several devices are built in a subprocess on 8 simulated CPU devices (the device
count is fixed when jax starts).
"""

import json
import os
import subprocess
import sys

import jax
from jax.sharding import AxisType
import pytest

from alignment import parallel


def test_default_mesh_is_data_parallel_over_every_device():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}
  assert mesh.axis_types == (AxisType.Auto,) * 3


@pytest.mark.parametrize("shape, match", [
    ({"model": 1}, r"unknown mesh axes \['model'\]"),
    ({"data": 0}, "size of axis 'data' must be a positive int or -1"),
    ({"fsdp": True}, "size of axis 'fsdp' must be a positive int or -1"),
    ({"tensor": 1.0}, "size of axis 'tensor' must be a positive int or -1"),
    ({"data": -1, "fsdp": -1}, "at most one axis may be -1"),
    ({"data": -1, "tensor": 3}, "not divisible by the fixed axis sizes"),
    ({"data": 2}, "multiply to 2, but there are 1 devices"),
])
def test_bad_shapes_are_named(shape, match):
  with pytest.raises(ValueError, match=match):
    parallel.make_mesh(shape, devices=jax.devices()[:1])


_EIGHT_DEVICES = """
import json
import jax
from alignment import parallel
shapes = {
    "default": parallel.make_mesh(),
    "fsdp_rest_tensor_2": parallel.make_mesh({"fsdp": -1, "tensor": 2}),
    "all_fixed": parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}),
    "first_four": parallel.make_mesh({"tensor": -1}, devices=jax.devices()[:4]),
}
out = {name: [mesh.shape[a] for a in parallel.MESH_AXES] for name, mesh in shapes.items()}
out["first_four_devices"] = sorted(d.id for d in shapes["first_four"].devices.flat)
print(json.dumps(out))
"""


def test_meshes_over_eight_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", _EIGHT_DEVICES], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  # The free axis (-1) takes what the fixed sizes leave: 8 / 2 = 4 for fsdp.
  assert json.loads(result.stdout.splitlines()[-1]) == {
      "default": [8, 1, 1], "fsdp_rest_tensor_2": [1, 4, 2], "all_fixed": [2, 2, 2],
      "first_four": [1, 1, 4], "first_four_devices": [0, 1, 2, 3]}
