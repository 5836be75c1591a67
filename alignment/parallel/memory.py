"""Per-device memory of compiled programs, from XLA's own memory analysis.

`compiled.memory_analysis()` describes the SPMD-partitioned program that runs on each device, so
its figures are per device: a replicated parameter counts fully on every device, an FSDP-sharded
one by its shard.
"""

from __future__ import annotations

from typing import Any

import jax

_FIELDS = {
    "argument_bytes": "argument_size_in_bytes",
    "output_bytes": "output_size_in_bytes",
    "temp_bytes": "temp_size_in_bytes",
    "alias_bytes": "alias_size_in_bytes",
    "generated_code_bytes": "generated_code_size_in_bytes",
}


def memory_report(compiled: jax.stages.Compiled) -> dict[str, int]:
  """Per-device bytes of a compiled program (`jax.jit(f).lower(...).compile()`).

  Returns:
    `argument_bytes`, `output_bytes`, `temp_bytes`, `alias_bytes` (outputs that reuse donated
    arguments), `generated_code_bytes`, and `peak_bytes = argument + output − alias + temp`
    (live at once at the worst point: inputs, outputs not aliased to inputs, scratch).

  Raises:
    ValueError: the backend gives no memory analysis.
  """
  analysis = compiled.memory_analysis()
  if analysis is None:
    raise ValueError("memory_report: this backend gives no memory analysis for the program.")
  report = {name: int(getattr(analysis, field)) for name, field in _FIELDS.items()}
  report["peak_bytes"] = (report["argument_bytes"] + report["output_bytes"]
                          - report["alias_bytes"] + report["temp_bytes"])
  return report


def parameter_bytes(tree: Any, shardings: Any) -> int:
  """Per-device bytes that the arrays of `tree` take when placed with `shardings`.

  Compiles a program that only takes the arrays (nothing is run or allocated) and reads its
  argument size from XLA's memory analysis.

  Args:
    tree: arrays or `jax.ShapeDtypeStruct`s (e.g. `jax.eval_shape(init_params, ...)`).
    shardings: a matching tree of shardings (e.g. `param_shardings(...)`).
  """
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  compiled = jax.jit(lambda _: 0, in_shardings=(shardings,), keep_unused=True).lower(
      abstract).compile()
  return memory_report(compiled)["argument_bytes"]
