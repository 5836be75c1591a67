"""The main job: SFT -> sample K responses -> rate -> listwise preference training -> evaluate
(`alignment.recipes.demo`).

    python -m experiments.demo --workdir=workdir/demo

Writes `report.json` (win rate against the SFT policy with its 95% interval, per-attribute
rewards, KL, timings) and `report.png` to the workdir; re-running resumes every stage.
"""

from alignment.recipes import demo
from experiments import _flags

if __name__ == "__main__":
  _flags.run_recipe(demo)
