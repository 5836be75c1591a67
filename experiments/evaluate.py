"""Evaluation of a policy against a reference policy under the task's true reward
(`alignment.recipes.evaluation`).

    python -m experiments.evaluate --workdir=/tmp/eval --config.evaluate.policy=/tmp/train \
        --config.evaluate.reference=/tmp/sft

Writes `workdir/eval.json`: win rate with its 95% interval, rewards and win rates per attribute,
fractions of good responses, KL to the reference and held-out ranking accuracy.
"""

from alignment.recipes import evaluation
from experiments import _flags

if __name__ == "__main__":
  _flags.run_recipe(evaluation)
