"""Rewards as pure functions: reward-model losses, reward transforms and combination,
multi-objective scalarisation, calibration, preference models, arena ratings and similarity
rewards against reference answers.

Part of the pure core: imports nothing from `models`, `data`, `training` or `parallel`, and
registers nothing in the objectives registry.
"""

from alignment.rewards import arena, bt, calibration, multi_objective, preference_models, similarity
from alignment.rewards import transforms
from alignment.rewards.arena import (
    ArenaBootstrap,
    aggregate_battles,
    arena_bt_bootstrap,
    arena_bt_fit,
    elo_win_probability,
    online_elo,
)
from alignment.rewards.bt import bt_all_pairs, bt_listwise, bt_pairwise
from alignment.rewards.calibration import (
    charm_offsets,
    charm_pairs,
    charm_win_matrix,
    elo_win_matrix,
    mismatch_degree,
)
from alignment.rewards.multi_objective import (
    directional_best,
    directional_reward,
    dpa_prompt_weights,
    more_loss,
    more_weights,
    panacea_ls,
    panacea_tche,
    sample_preference,
    unit_direction,
)
from alignment.rewards.preference_models import (
    gpm_eigenvalues,
    gpm_loss,
    gpm_regression_loss,
    gpm_score,
    gpm_temperature,
    pal_ideal_point,
    pal_loss,
    pal_prototype_penalty,
    pal_score,
)
from alignment.rewards.similarity import refalign_reward
from alignment.rewards.transforms import combine_rewards, lsc, r_ref_normal, r_ref_quantile
