"""Align your own Hugging Face checkpoint on your own preference file (`alignment.recipes.align`).

    python -m experiments.align --workdir=$OUT --config.model.path=$MODEL \
        --config.train.data=$DATA [--config.loss.name=dpo --config.train.lora.rank=16]

Writes `$OUT/hf` (the aligned model as a Hugging Face folder), `$OUT/adapter` with LoRA (PEFT's
format), `metrics.jsonl`, TensorBoard events, checkpoints and `data_stats.json`; re-running with
the same workdir resumes.
"""

from alignment.recipes import align
from experiments import _flags

if __name__ == "__main__":
  _flags.run_recipe(align, config_file="align.py")
