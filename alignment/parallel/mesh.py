"""Device meshes with the library's named axes: `data`, `fsdp`, `tensor`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(shape: Mapping[str, int] | None = None, *,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with axes `("data", "fsdp", "tensor")` over all (or the given) devices.

  Axes left out of `shape` have size 1, and at most one axis may be -1 (it takes the devices that
  are left), so `make_mesh()` is pure data parallelism over every device and
  `make_mesh({"fsdp": -1, "tensor": 2})` is FSDP x 2-way tensor parallelism. The device order comes
  from `jax.make_mesh`, which places the innermost axis (`tensor`) on the best-connected devices.
  The axes are `Auto` (GSPMD propagation from the shardings given to `jax.jit`), not `Explicit`.

  Args:
    shape: sizes per mesh axis, e.g. `{"data": 2, "fsdp": 2, "tensor": 2}`; default `{"data": -1}`.
    devices: devices to use; default `jax.devices()`.

  Returns:
    A `jax.sharding.Mesh` whose axis sizes multiply to the number of devices.

  Raises:
    ValueError: an unknown axis name, a size that is not a positive int (or one -1), or sizes
      whose product is not the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = dict({"data": -1} if shape is None else shape)
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"make_mesh: unknown mesh axes {unknown}; the axes are {MESH_AXES}.")
  sizes = {axis: shape.get(axis, 1) for axis in MESH_AXES}
  for axis, size in sizes.items():
    if not isinstance(size, int) or isinstance(size, bool) or (size < 1 and size != -1):
      raise ValueError(f"make_mesh: size of axis {axis!r} must be a positive int or -1; "
                       f"got {size!r}.")
  free = [axis for axis, size in sizes.items() if size == -1]
  if len(free) > 1:
    raise ValueError(f"make_mesh: at most one axis may be -1; got {free}.")
  fixed = math.prod(size for size in sizes.values() if size != -1)
  if free:
    if len(devices) % fixed:
      raise ValueError(f"make_mesh: {len(devices)} devices are not divisible by the fixed axis "
                       f"sizes {sizes} (product {fixed}).")
    sizes[free[0]] = len(devices) // fixed
  elif fixed != len(devices):
    raise ValueError(f"make_mesh: axis sizes {sizes} multiply to {fixed}, but there are "
                     f"{len(devices)} devices.")
  return jax.make_mesh(tuple(sizes.values()), MESH_AXES,
                       axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)
