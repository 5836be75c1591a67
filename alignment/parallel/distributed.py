"""Multi-host runs on JAX's own multi-controller runtime (`jax.distributed`).

Every host (process) runs the same binary. `initialize()` connects the processes before any
other JAX call; afterwards `jax.devices()` lists the devices of all hosts, a mesh spans them, and
every jitted step is one SPMD program. What each host must still do itself:

- read its own rows of every global batch (`local_batch_size`, `process_rows`) and assemble
  global arrays with `jax.make_array_from_process_local_data` (`alignment.parallel.shard_batch`);
- bring global values to the host collectively (`to_host`) and write files on one host only
  (`is_coordinator`);
- checkpoint the data position of every host (`ProcessDataIterator`), so that a run restarted
  with another number of hosts continues the same global data stream.

The global data stream does not depend on the number of hosts: global batch `b` holds positions
`[b·G, (b + 1)·G)` of one (shuffled) record stream, and host `i` of `P` reads rows
`[i·G/P, (i + 1)·G/P)` of it, so 2 hosts x 2 devices and 1 host x 4 devices train on the same
batches.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import grain
import jax
import numpy as np
from jax.experimental import multihost_utils

ENVIRONMENTS = ("explicit", "tpu", "slurm", "single")

# Variables a Cloud TPU VM worker has (set by the TPU runtime / `gcloud ... ssh --worker=all`).
_TPU_VARIABLES = ("TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID", "CLOUD_TPU_TASK_ID",
                  "TPU_ACCELERATOR_TYPE")
# Local examples a host may read before its record view wraps around (never reached in practice).
_STREAM_LENGTH = 2**40


@dataclasses.dataclass(frozen=True)
class DistributedInfo:
  """Where this process stands after `initialize()`."""

  environment: str
  process_index: int
  process_count: int
  local_device_count: int
  device_count: int


def detect_environment(environ: Optional[Mapping[str, str]] = None) -> str:
  """Which cluster launched this process, from its environment variables.

  - `"explicit"`: `JAX_COORDINATOR_ADDRESS` is set (with `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`);
  - `"tpu"`: a Cloud TPU VM worker (`TPU_WORKER_HOSTNAMES`, `TPU_WORKER_ID`, ... are set);
  - `"slurm"`: a SLURM job step with more than one task (`SLURM_JOB_ID`, `SLURM_NTASKS > 1`);
  - `"single"`: none of these: one process, nothing to connect.

  Args:
    environ: the variables to look at; default `os.environ`.
  """
  env = os.environ if environ is None else environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "explicit"
  if any(env.get(name) for name in _TPU_VARIABLES):
    return "tpu"
  if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1")) > 1:
    return "slurm"
  return "single"


def initialize(
    *,
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    local_device_ids: Optional[Sequence[int]] = None,
    cpu_collectives: str = "gloo",
    initialization_timeout: int = 300,
    environ: Optional[Mapping[str, str]] = None,
) -> DistributedInfo:
  """Connects this process to the others with `jax.distributed.initialize`; call it first.

  Explicit arguments win; otherwise the environment decides (`detect_environment`):
  `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`, or JAX's own cluster
  detection on a TPU VM slice and under SLURM, or nothing at all for a single process. Calling it
  again after a successful initialisation only reports the state.

  Args:
    coordinator_address: `host:port` of process 0's coordinator service.
    num_processes: number of processes (hosts).
    process_id: this process's index in `[0, num_processes)`.
    local_device_ids: the local devices this process drives (default: all).
    cpu_collectives: cross-process collectives of the CPU backend (`"gloo"` or `"mpi"`); this
      is what lets several local CPU processes stand in for hosts in tests.
    initialization_timeout: seconds to wait for all processes to connect.
    environ: environment variables to read; default `os.environ`.

  Returns:
    A `DistributedInfo`.

  Raises:
    ValueError: an explicit set of arguments (or `JAX_*` variables) that is incomplete or
      inconsistent.
  """
  env = os.environ if environ is None else environ
  explicit = (coordinator_address, num_processes, process_id)
  if any(x is not None for x in explicit):
    environment = "explicit"
  else:
    environment = detect_environment(env)
    if environment == "explicit":
      coordinator_address = env["JAX_COORDINATOR_ADDRESS"]
      num_processes = int(env["JAX_NUM_PROCESSES"]) if env.get("JAX_NUM_PROCESSES") else None
      process_id = int(env["JAX_PROCESS_ID"]) if env.get("JAX_PROCESS_ID") else None
  if jax.distributed.is_initialized() or environment == "single":
    return _info(environment)
  if environment == "explicit":
    if coordinator_address is None or num_processes is None or process_id is None:
      raise ValueError(
          "initialize: explicit multi-process runs need coordinator_address, num_processes and "
          f"process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); got "
          f"{coordinator_address!r}, {num_processes!r}, {process_id!r}.")
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f"initialize: process_id={process_id} is not in [0, num_processes="
                       f"{num_processes}).")
  jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  kwargs = dict(initialization_timeout=initialization_timeout)
  if local_device_ids is not None:
    kwargs["local_device_ids"] = list(local_device_ids)
  if environment == "explicit":
    kwargs.update(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  jax.distributed.initialize(**kwargs)  # tpu / slurm: JAX's cluster detection fills in the rest
  info = _info(environment)
  logging.info("jax.distributed initialised: %s", info)
  return info


def _info(environment: str) -> DistributedInfo:
  return DistributedInfo(environment, jax.process_index(), jax.process_count(),
                         jax.local_device_count(), jax.device_count())


def is_coordinator() -> bool:
  """True on process 0, the one that writes logs, reports and exported files."""
  return jax.process_index() == 0


def local_batch_size(global_batch_size: int, process_count: Optional[int] = None) -> int:
  """Rows of a global batch that each process reads: `G / P`.

  Raises:
    ValueError: `G` not a positive multiple of the process count.
  """
  count = jax.process_count() if process_count is None else process_count
  if global_batch_size < 1 or global_batch_size % count:
    raise ValueError(f"The global batch size {global_batch_size} must be a positive multiple of "
                     f"the number of processes ({count}).")
  return global_batch_size // count


def process_rows(stream: grain.MapDataset, global_batch_size: int, *,
                 process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> grain.MapDataset:
  """This process's view of a global record stream: rows `[i·L, (i+1)·L)` of each global batch.

  Local position `k` is global position `(k // L)·G + i·L + k mod L`, with `L = G / P`; `stream`
  must accept any position (grain sources wrap around; `shuffle` draws a new permutation per
  epoch). With one process the view is `stream` itself, position for position.

  Args:
    stream: random-access records, e.g. `grain.MapDataset.source(records).shuffle(seed=0)`.
    global_batch_size: `G`.
    process_index, process_count: default `jax.process_index()`, `jax.process_count()`.
  """
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  local = local_batch_size(global_batch_size, count)

  def record(k):
    return stream[(k // local) * global_batch_size + index * local + k % local]

  return grain.MapDataset.range(_STREAM_LENGTH).map(record)


def _allgather_json(value: Any) -> list[Any]:
  """`[value of process 0, value of process 1, ...]` for a JSON-serialisable value."""
  if jax.process_count() == 1:
    return [value]
  data = np.frombuffer(json.dumps(value).encode("utf-8"), np.uint8)
  lengths = multihost_utils.process_allgather(np.array([data.size], np.int32))
  padded = np.zeros(int(np.max(lengths)), np.uint8)
  padded[:data.size] = data
  gathered = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(row[:n]).decode("utf-8")) for row, n in zip(gathered, lengths[:, 0])]


class ProcessDataIterator:
  """A host's batch iterator whose checkpoint state covers every host.

  `get_state()` is collective (every process calls it at the same step) and returns
  `{"process_count": P, "batches": b, "processes": [state of host 0, ...]}`. `set_state` takes
  this host's entry back; when the checkpoint was written by another number of hosts it resumes
  the global stream after `b` global batches instead (exact when the length policy dropped
  nothing; the bad-input counts then restart). The wrapped iterator is one of
  `alignment.data.pipeline.preference_dataset`'s (its state is
  `{"parent": {"next_index": k}, "counts": {...}}`) reading a `process_rows` view.
  """

  def __init__(self, iterator, *, global_batch_size: int):
    self._iterator = iterator
    self._global_batch_size = global_batch_size
    self._batches = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = next(self._iterator)
    self._batches += 1
    return batch

  def stats(self) -> dict:
    return self._iterator.stats()

  def get_state(self) -> dict:
    return {"process_count": jax.process_count(), "batches": self._batches,
            "processes": _allgather_json(self._iterator.get_state())}

  def set_state(self, state: Mapping[str, Any]) -> None:
    if "processes" not in state:
      raise ValueError(f"Data state {state!r} was not written by a ProcessDataIterator.")
    self._batches = int(state["batches"])
    if int(state["process_count"]) == jax.process_count():
      self._iterator.set_state(state["processes"][jax.process_index()])
      return
    local = local_batch_size(self._global_batch_size)
    logging.warning("The checkpoint's data state is from %d processes, this run has %d: "
                    "resuming the global stream after %d batches.", state["process_count"],
                    jax.process_count(), self._batches)
    self._iterator.set_state({"parent": {"next_index": self._batches * local}, "counts": {}})


def put_global(tree: Any, shardings: Any) -> Any:
  """`jax.device_put(tree, shardings)` that also works when the shardings span several hosts.

  Every process passes the same host value (e.g. parameters initialised from the same seed or
  read from the same file); each places only the shards its own devices hold, with no
  cross-host traffic. PRNG key arrays are placed through their key data.

  Args:
    tree: a pytree of arrays (numpy or jax, committed or not).
    shardings: a matching tree of `jax.sharding.Sharding`s.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)

  def put(x, sharding):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x), sharding),
                                      impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put, tree, shardings)


def to_host(tree: Any) -> Any:
  """Numpy copies of a pytree of (possibly multi-host) arrays; collective with several hosts.

  Arrays this process holds completely (one host, or replicated values such as metrics) are
  copied locally; arrays sharded across hosts are gathered from all of them, so every process
  must call this at the same point.
  """
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree.map(fetch, tree)
