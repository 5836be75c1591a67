"""Default config of `experiments/reward_model.py`: a reward model of the sorting task's responses.

    python -m experiments.reward_model --config=experiments/configs/reward_model.py \
        --workdir=/tmp/rm [--config.reward_model.heads=attributes] [--config.loss.name=plackett_luce]

Sections: `model`, `task` (as in `demo.py`), `data` (candidate responses and their rater),
`reward_model` (heads and labels), `loss`, `train`, `evaluate`. About a minute on a 2-core CPU.

Defaults: lists of K = 8 demonstrations for 4096 prompts, ranked by a Plackett–Luce rater, and
the Plackett–Luce loss (the rater's own likelihood, so its maximiser is the rater's utility r/T),
360 steps of 32 lists. Measured held-out pairwise accuracy (256 lists of 4, true-reward order)
with a noisy rater, `--config.data.rater_temperature=1.0`: 0.869, 0.838, 0.868, 0.851 for seeds
0-3, where K = 2 pairs with Bradley–Terry (2048 prompts, 240 steps: the earlier default) reach
0.696 on seed 0, K = 4 0.78-0.80 and K = 4 with 4096 prompts and 480 steps 0.79-0.83
(`tests/training/test_reward_training.py` asserts >= 0.8 at temperature 1).
"""

import ml_collections

from experiments.configs import demo
from experiments.configs.demo import optimizer


def get_config():
  base = demo.get_config()
  c = ml_collections.ConfigDict()
  c.seed = base.seed
  # The demo's task and decoder: the RLHF binary reads reward models with its model config.
  c.task = base.task
  c.model = base.model
  # Candidate responses: the task's mixed-quality demonstrations, or samples of a policy
  # (`source="policy"`, `policy` = an SFT workdir). Training lists are labelled by the rater
  # ("plackett_luce" over the true rewards, or "true_reward"); held-out lists by the true reward.
  # attribute: "" rates the total reward; an attribute of the task (e.g. "harmlessness") rates
  # that attribute alone, for both the training and the held-out lists (a scalar model of it).
  c.data = ml_collections.ConfigDict(
      dict(
          source="demonstrations",
          policy="",
          num_prompts=4096,
          k=8,
          rater="plackett_luce",
          rater_temperature=0.05,
          flip_rate=0.0,
          attribute="",
          temperature=1.0,
          sample_batch_size=256,
      )
  )
  # heads: "scalar" (one head) or "attributes" (one head per task attribute, combined with the
  # task's weights); labels: "combined" (the rater's labels of the whole response) or
  # "per_attribute" (each head ranked by its attribute's true value; needs heads="attributes").
  # init: "" (random backbone) or a decoder workdir / params file (e.g. the SFT policy).
  c.reward_model = ml_collections.ConfigDict(dict(heads="scalar", labels="combined", init=""))
  # name: "bradley_terry" (pairs; all ordered pairs of a list) or "plackett_luce" (ListMLE).
  c.loss = ml_collections.ConfigDict(dict(name="plackett_luce", temperature=1.0))
  c.train = ml_collections.ConfigDict(
      dict(
          batch_size=32,
          num_steps=360,
          accum_steps=1,
          optimizer=optimizer(1e-3, 360, 20),
          on_nonfinite="skip",
          log_every=20,
          eval_every=40,
          checkpoint_every=120,
          keep_checkpoints=2,
      )
  )
  c.evaluate = ml_collections.ConfigDict(dict(num_prompts=256, k=4, batch_size=256))
  return c
