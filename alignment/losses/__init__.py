"""Preference objectives as pure functions over `[..., K]` arrays (Rax style).

`get(name)` returns a registered objective, `names()` lists them, `spec(name)` says what it needs.
Importing this package registers every objective of its modules.
"""

from alignment.arrays import sum_and_count
from alignment.losses import advantages, completions, lambdaweights, listwise, pairwise
from alignment.losses import pointwise, policy_gradient, ranking, reference_free, self_play
from alignment.losses.registry import ObjectiveSpec, get, names, register, spec
