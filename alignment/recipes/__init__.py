"""Whole runs as library functions: each recipe takes a typed config and returns its results.

| module | run |
|---|---|
| `sft` | supervised fine-tuning on a task's demonstrations |
| `preferences` | sample K responses per prompt from a policy and rate them |
| `preference_training` | preference training with any registered objective (curricula, online rounds) |
| `evaluation` | win rate of a policy against a reference on held-out prompts |
| `demo` | the main job: the four above, chained |
| `align` | a local Hugging Face checkpoint aligned on a preference file, exported back |
| `reward_model` | Bradley–Terry / Plackett–Luce reward models with held-out accuracy |
| `rlhf` | on-policy group policy-gradient training (GRPO, RLOO) |
| `zo_synthetic`, `zo_policy`, `zo_lm` | ZO-RankSGD experiments |

Every recipe is `run(config, workdir) -> Result`, with `config` a frozen dataclass of the
recipe's module (`alignment.recipes.config.from_dict` builds one from plain mappings); the
binaries in `experiments/` only turn flags into that config. Import the modules you need
(`from alignment.recipes import sft`); this package imports none of them itself.
"""
