"""Zeroth-order optimisation from ranking feedback: ZO-RankSGD, its oracles and baselines.

Paper: *Zeroth-Order Optimization Meets Human Feedback: Provable Learning via Ranking Oracles*
(Tang, Rybin, Chang; ICLR 2024); ComPO (*Preference Alignment via Comparison Oracles*, Chen et
al.; NeurIPS 2025); guide in `docs/zo.md`. Part of the pure core: imports neither flax nor anything
under `alignment.models`, `data`, `training` or `parallel`; `cma` only inside `cma_es`.
"""

from alignment.zo.baselines import (
    cma_es,
    comparison_zo,
    evolution_strategy,
    gld,
    normalized_gd,
    zo_sgd,
)
from alignment.zo.compo import (
    compo_direction,
    compo_step,
    compo_step_official,
    noisy_pair_mask,
)
from alignment.zo.estimator import (
    num_pairs,
    pair_dag,
    rank_coefficients,
    rank_coefficients_official,
    rank_direction,
    rank_grad_estimate,
    sample_perturbations,
)
from alignment.zo.line_search import (
    LineSearchState,
    rank_line_search,
    rank_line_search_official,
)
from alignment.zo.objectives import low_rank_quadratic, rosenbrock, sample_low_rank_quadratic
from alignment.zo.optimizer import ZeroOrderOptimizer, ZeroOrderState, zo_rank_sgd
from alignment.zo.oracles import (
    comparison_oracle,
    exact_oracle,
    flip_oracle,
    flip_ranking,
    host_oracle,
    human_oracle,
    negated_returns,
    plackett_luce_oracle,
    plackett_luce_ranking,
    rank_oracle,
    returns_oracle,
)
from alignment.zo.policy import cartpole_return, init_linear_policy, linear_policy
