"""alignment.parallel: device meshes, partition rules, and placing parameters and batches."""

from alignment.parallel.mesh import MESH_AXES, make_mesh
from alignment.parallel.sharding import (
    BATCH_MESH_AXES,
    LOGICAL_AXES,
    STRATEGY_PARTS,
    batch_sharding,
    logical_axis_rules,
    param_shardings,
    shard_batch,
    shard_params,
    spec_for,
)

__all__ = [
    "BATCH_MESH_AXES", "LOGICAL_AXES", "MESH_AXES", "STRATEGY_PARTS", "batch_sharding",
    "logical_axis_rules", "make_mesh", "param_shardings", "shard_batch", "shard_params",
    "spec_for",
]
