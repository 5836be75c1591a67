"""Default config of `experiments/reward_model.py`: a reward model of the sorting task's responses.

    python -m experiments.reward_model --config=experiments/configs/reward_model.py \
        --workdir=/tmp/rm [--config.reward_model.heads=attributes] [--config.loss.name=plackett_luce]

Sections: `model`, `task` (as in `demo.py`), `data` (candidate responses and their rater),
`reward_model` (heads and labels), `loss`, `train`, `evaluate`. About a minute on a 2-core CPU.
"""

import ml_collections

from experiments.configs.demo import optimizer


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = ml_collections.ConfigDict(dict(name="sorting"))
  c.model = ml_collections.ConfigDict(
      dict(preset="tiny", width=64, depth=2, mlp_dim=192, dtype="float32", logprob_chunk=256)
  )
  # Candidate responses: the task's mixed-quality demonstrations, or samples of a policy
  # (`source="policy"`, `policy` = an SFT workdir). Training lists are labelled by the rater
  # ("plackett_luce" over the true rewards, or "true_reward"); held-out lists by the true reward.
  c.data = ml_collections.ConfigDict(
      dict(
          source="demonstrations",
          policy="",
          num_prompts=2048,
          k=2,
          rater="plackett_luce",
          rater_temperature=0.05,
          flip_rate=0.0,
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
  c.loss = ml_collections.ConfigDict(dict(name="bradley_terry", temperature=1.0))
  c.train = ml_collections.ConfigDict(
      dict(
          batch_size=32,
          num_steps=240,
          accum_steps=1,
          optimizer=optimizer(1e-3, 240, 20),
          on_nonfinite="skip",
          log_every=20,
          eval_every=40,
          checkpoint_every=80,
          keep_checkpoints=2,
      )
  )
  c.evaluate = ml_collections.ConfigDict(dict(num_prompts=256, k=4, batch_size=256))
  return c
