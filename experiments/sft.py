"""Supervised fine-tuning of the policy on a task's demonstrations (`alignment.recipes.sft`).

    python -m experiments.sft --config=experiments/configs/demo.py --workdir=/tmp/sft

Writes `workdir/params.msgpack` (the SFT policy, also the reference of later stages),
`metrics.jsonl`, TensorBoard events and checkpoints; re-running with the same workdir resumes.
"""

from alignment.recipes import sft
from experiments import _flags

if __name__ == "__main__":
  _flags.run_recipe(sft)
