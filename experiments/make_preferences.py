"""Preference data from a policy: sample K responses per prompt and rate them
(`alignment.recipes.preferences`).

    python -m experiments.make_preferences --workdir=/tmp/prefs --config.preferences.policy=/tmp/sft

Writes `workdir/preferences.jsonl` (listwise layout: `prompt`, `responses`, `scores` = the
rater's graded labels, `rewards` = the true rewards) and `workdir/preferences_stats.json`.
"""

from alignment.recipes import preferences
from experiments import _flags

if __name__ == "__main__":
  _flags.run_recipe(preferences)
