"""Preference objectives as pure functions over `[..., K]` arrays (Rax style).

`get(name)` returns a registered objective, `names()` lists them, `spec(name)` says what it needs.
"""

from alignment.losses import lambdaweights, listwise, pairwise, pointwise, ranking, reference_free
from alignment.losses import group
from alignment.losses._utils import sum_and_count
from alignment.losses.registry import ObjectiveSpec, get, names, register, spec
