"""Config of `experiments/rlhf.py`: the demo config plus an `rlhf` section.

    python -m experiments.rlhf --config=experiments/configs/rlhf.py --workdir=/tmp/rlhf

`rlhf.init` is an SFT workdir (`experiments/sft.py`); empty trains one (the `sft` section) in
`workdir/sft`. Each round samples `group_size` responses for `prompts_per_round` training prompts
from the current policy, scores them with `rewards` ("task" = the true reward, or reward-model
workdirs of `experiments/reward_model.py`), optionally LSC-transforms and combines them, computes
group advantages and takes `epochs` passes of minibatch updates. The evaluation (`evaluate`
section) compares the result with the SFT policy on held-out prompts.
"""

import ml_collections

from experiments.configs.demo import get_config as _demo_config
from experiments.configs.demo import optimizer


def get_config():
  c = _demo_config()
  num_rounds, prompts_per_round, minibatch_prompts, epochs = 24, 64, 16, 2
  steps = num_rounds * epochs * (prompts_per_round // minibatch_prompts)
  c.rlhf = ml_collections.ConfigDict(
      dict(
          init="",  # SFT workdir; "" trains one in workdir/sft
          num_prompts=2048,  # pool of training prompts
          num_rounds=num_rounds,
          prompts_per_round=prompts_per_round,
          group_size=8,  # G responses per prompt
          temperature=1.0,
          epochs=epochs,
          minibatch_prompts=minibatch_prompts,  # whole groups per update
          # Advantages: "grpo" (group z-score, scale_rewards "group" | "batch" | "none") or "rloo".
          advantage="grpo",
          scale_rewards="group",
          # Clipped surrogate of alignment.losses.group: loss_type "grpo" | "bnpo" | "dapo" |
          # "dr_grpo"; importance_sampling_level "token" | "sequence" (GSPO).
          loss_type="grpo",
          epsilon=0.2,
          epsilon_high=0.2,
          importance_sampling_level="token",
          # KL to the SFT reference: "loss" (beta_kl * kl_estimator per token) or "reward"
          # (beta_kl * k1 summed per sequence, subtracted from the reward); 0 switches it off.
          kl_in="loss",
          beta_kl=0.02,
          kl_estimator="k3",
          # Old log-probs of the ratio: "sampler" (returned by the sampler) or "forward" (one
          # forward of the current policy before the epochs).
          old_logps="sampler",
          # Reward sources, combined by `reward_transform`: "none" (weighted raw sum) or "lsc"
          # (sum of logsigmoid(r - r_ref(x)), r_ref from `r_ref_samples` SFT samples per prompt).
          rewards=("task",),
          reward_weights=(),  # () = all 1
          reward_transform="none",
          r_ref_estimator="quantile",
          r_ref_samples=8,
          r_ref_q=0.85,
          optimizer=optimizer(3e-4, steps, 4),
          sample_batch_size=512,
          checkpoint_every=1,  # rounds
          keep_checkpoints=2,
          evaluate=True,  # held-out evaluation against the SFT policy (`evaluate` section)
      )
  )
  return c
