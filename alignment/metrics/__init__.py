"""Preference, ranking, displacement, calibration and evaluation metrics.

Pure JAX functions over float32 arrays with boolean `where` masks (the conventions of
`docs/conventions.md`: the last axis is the list of K responses, pairs use K = 2 with slot 0 the
chosen and slot 1 the rejected response, labels are higher-is-better and ties form no pair).
Every metric is exactly reducible across micro-batches, devices and hosts, and each docstring
says how:

- most return a `SumCount` (a `(sum, count)` named tuple): add them with `add` and take
  `mean` at the end; the mean of the accumulated pair equals the metric of the whole set;
- per-example scores (`ches`, `ln_ches`, `dpo_flip_threshold`) are reduced by concatenation or
  with `sum_count`;
- `calibration_bins` returns per-bin sums (added with `add`), which `calibration_errors` turns into
  ECE; `win_rate` needs all outcomes at once (its interval is not a sum).

Modules: `aggregation` (`SumCount`, `add`, `mean`), `preference` (implicit-reward training
metrics), `ranking` (ranking accuracy, flip thresholds, NDCG, Kendall τ), `displacement`
(likelihood displacement, CHES), `calibration` (ECE) and `evaluation` (win rates, KL). Every
public name is re-exported here (`alignment.metrics.win_rate`).

Example:
  >>> import jax.numpy as jnp
  >>> from alignment import metrics
  >>> logps = jnp.array([[-1.0, -2.0], [-3.0, -1.0]])
  >>> labels = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  >>> acc = metrics.add(metrics.ranking_accuracy(logps[:1], labels[:1]),
  ...                   metrics.ranking_accuracy(logps[1:], labels[1:]))
  >>> float(metrics.mean(acc))
  0.5
"""

from alignment.metrics import aggregation, calibration, displacement, evaluation, preference
from alignment.metrics import ranking
from alignment.metrics.aggregation import SumCount, add, mean, sum_count
from alignment.metrics.calibration import (
    CalibrationBins,
    calibration_bins,
    calibration_errors,
    ece,
)
from alignment.metrics.displacement import (
    ches,
    ln_ches,
    logprob_change,
    predicting_window_mask,
)
from alignment.metrics.evaluation import (
    WinRate,
    attribute_win_rates,
    exact_kl,
    good_fractions,
    sample_kl,
    token_kl_k3,
    win_outcomes,
    win_rate,
)
from alignment.metrics.preference import reward_metrics, undesirable_region_fraction
from alignment.metrics.ranking import (
    IDEALIZED_BETAS,
    below_flip_threshold,
    dpo_flip_threshold,
    idealized_ranking_accuracy,
    ipo_flip_threshold,
    kendall_tau,
    ndcg,
    ranking_accuracy,
    ranking_accuracy_lists,
    summarize_over_betas,
)
