"""alignment.parallel: device meshes, partition rules, placing parameters and batches, multi-host
initialisation (`jax.distributed`) and per-device memory from XLA's analysis."""

from alignment.parallel.distributed import (
    ENVIRONMENTS,
    DistributedInfo,
    ProcessDataIterator,
    detect_environment,
    initialize,
    is_coordinator,
    local_batch_size,
    process_rows,
    put_global,
    to_host,
)
from alignment.parallel.memory import memory_report, parameter_bytes
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
    "BATCH_MESH_AXES", "ENVIRONMENTS", "LOGICAL_AXES", "MESH_AXES", "STRATEGY_PARTS",
    "DistributedInfo", "ProcessDataIterator", "batch_sharding", "detect_environment",
    "initialize", "is_coordinator", "local_batch_size", "logical_axis_rules", "make_mesh",
    "memory_report", "param_shardings", "parameter_bytes", "process_rows", "put_global",
    "shard_batch", "shard_params", "spec_for", "to_host",
]
