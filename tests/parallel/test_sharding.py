"""Tests of alignment.parallel: meshes, partition rules, and sharded execution.

Rule tables are checked in-process on abstract meshes; sharded execution runs in a subprocess on
8 simulated CPU devices (tests/parallel/sharding_worker.py), since the device count is fixed when
jax starts.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from alignment import parallel

MESH = AbstractMesh((2, 2, 2), parallel.MESH_AXES)


def test_rules_of_each_strategy():
  rules = {s: dict(parallel.logical_axis_rules(s)) for s in ("dp", "fsdp", "tp", "fsdp_tp")}
  for table in rules.values():
    assert table["batch"] == ("data", "fsdp") and table["length"] is None
  assert all(v is None for k, v in rules["dp"].items() if k != "batch")
  assert rules["fsdp"]["embed"] == "fsdp" and rules["fsdp"]["vocab"] is None
  assert rules["tp"]["embed"] is None
  assert all(rules["tp"][k] == "tensor" for k in ("heads", "kv", "mlp", "vocab"))
  assert rules["fsdp_tp"] == {**rules["tp"], "embed": "fsdp"}
  assert parallel.logical_axis_rules("dp+fsdp+tp") == parallel.logical_axis_rules("fsdp_tp")
  with pytest.raises(ValueError, match="Unknown sharding strategy 'zero3'"):
    parallel.logical_axis_rules("zero3")


def test_spec_for_fallbacks():
  rules = parallel.logical_axis_rules("fsdp_tp")
  assert parallel.spec_for(("embed", "heads"), (64, 64), MESH, rules) == P("fsdp", "tensor")
  assert parallel.spec_for(("vocab", "embed"), (32, 64), MESH, rules) == P("tensor", "fsdp")
  # 33 is odd: the vocab dimension is replicated; embed is still split.
  assert parallel.spec_for(("vocab", "embed"), (33, 64), MESH, rules) == P(None, "fsdp")
  # Batch 2 over data x fsdp = 4: the longest dividing prefix, ("data",), is kept.
  assert parallel.spec_for(("batch", "length"), (2, 7), MESH, rules) == P("data", None)
  assert parallel.spec_for(("batch", "length"), (4, 7), MESH, rules) == P(("data", "fsdp"), None)
  assert parallel.spec_for(("batch", "length"), (3, 7), MESH, rules) == P(None, None)
  # A mesh axis splits one dimension only: fsdp is taken by batch, so embed stays whole.
  assert parallel.spec_for(("batch", "embed"), (4, 64), MESH, rules) == P(("data", "fsdp"), None)
  # Mesh axes of size 1 are dropped; without shapes, rules apply as they are.
  flat = AbstractMesh((8, 1, 1), parallel.MESH_AXES)
  assert parallel.spec_for(("batch", "embed"), (8, 64), flat, rules) == P("data", None)
  assert parallel.spec_for(("vocab", None), None, MESH, rules) == P("tensor", None)
  with pytest.raises(ValueError, match="Logical axis 'experts'.*has no rule"):
    parallel.spec_for(("experts",), (8,), MESH, rules)
  with pytest.raises(ValueError, match="names mesh axes not in the mesh"):
    parallel.spec_for(("embed",), (8,), MESH, (("embed", "expert"),))
  with pytest.raises(ValueError, match="do not match shape"):
    parallel.spec_for(("embed",), (8, 8), MESH, rules)


def test_param_shardings_tree():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), parallel.MESH_AXES)
  axes = {"w": ("embed", "mlp"), "b": ("mlp",), "s": ()}
  shardings = parallel.param_shardings(axes, mesh, parallel.logical_axis_rules("fsdp_tp"))
  assert shardings["w"].spec == P(None, None) and shardings["s"].spec == P()
  params = {"w": np.ones((4, 6)), "b": np.ones(6), "s": np.float32(1)}
  placed = parallel.shard_params(params, axes, mesh, parallel.logical_axis_rules("fsdp"))
  np.testing.assert_array_equal(placed["w"], params["w"])


def test_make_mesh_and_shard_batch_on_one_device():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == parallel.MESH_AXES
  assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}
  with pytest.raises(ValueError, match="unknown mesh axes \\['model'\\]"):
    parallel.make_mesh({"model": 1})
  with pytest.raises(ValueError, match="multiply to"):
    parallel.make_mesh({"data": 2 * jax.device_count(), "fsdp": 1})
  with pytest.raises(ValueError, match="at most one axis may be -1"):
    parallel.make_mesh({"data": -1, "fsdp": -1})
  batch = parallel.shard_batch({"tokens": np.arange(6).reshape(2, 3), "step": np.int32(3)}, mesh)
  assert batch["tokens"].sharding.spec == P(("data", "fsdp"))
  np.testing.assert_array_equal(batch["tokens"], np.arange(6).reshape(2, 3))
  assert batch["step"].sharding.spec == P()


@pytest.fixture(scope="module")
def eight_device_results():
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                        " --xla_force_host_platform_device_count=8").strip())
  worker = os.path.join(os.path.dirname(__file__), "sharding_worker.py")
  proc = subprocess.run([sys.executable, worker], env=env, capture_output=True, text=True,
                        timeout=400, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


EXPECTED = {
    # strategy: (q kernel [D, H·hd], embedding [V, D], shard of up kernel [64, 128])
    "dp": ("P(None, None)", "P(None, None)", [64, 128]),
    "fsdp": ("P('fsdp', None)", "P(None, 'fsdp')", [8, 128]),
    "tp": ("P(None, 'tensor')", "P('tensor', None)", [64, 32]),
    "fsdp_tp": ("P('fsdp', 'tensor')", "P('tensor', 'fsdp')", [32, 64]),
    "dp+fsdp": ("P('fsdp', None)", "P(None, 'fsdp')", [16, 128]),
}


@pytest.mark.parametrize("strategy", sorted(EXPECTED))
def test_sharded_execution_matches_single_device(eight_device_results, strategy):
  result = eight_device_results[strategy]
  assert result["logps_max_abs_diff"] <= 1e-5
  assert result["grads_max_rel_diff"] <= 1e-4  # float32 sums in another order across shards
  q_spec, embedding_spec, up_shard = EXPECTED[strategy]
  assert result["param_specs"]["layers_0/attn/q/kernel"] == q_spec
  assert result["param_specs"]["embed/embedding"] == embedding_spec
  assert result["up_kernel_shard_shape"] == up_shard
  assert result["batch_spec"] == "P(('data', 'fsdp'),)"
  if strategy == "dp":  # replicated parameters, batch-sharded log-probs: nothing to gather
    assert result["all_gathers"] == 0
    assert result["logps_spec"] == "P('data',)"
  # LoRA factors follow their kernels: A [D, r] splits like the kernel's input axis.
  assert result["adapter_specs"]["layers_0/attn/q/a"] == q_spec.split(",")[0] + ", None)"
