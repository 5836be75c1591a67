"""Name -> objective registry (`losses.get("dpo")`, `losses.names()`).

Each objective module ends with `register(name, fn=..., ...)` calls for its objectives; importing
`alignment.losses` registers them all, and experiments select a loss by name from config. The
spec records what the training layer must feed the objective.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

Objective = Callable[..., object]


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
  """What is known about one registered objective.

  Attributes:
    name: registry name (`docs/objectives.md` lists every one).
    fn: the pure function.
    paper: title of the paper (and official code repository if any).
    family: "pairwise" | "reference_free" | "pointwise" | "listwise" | "group" | "reward"
      ("group": the on-policy objectives over K completions per prompt of `advantages`,
      `policy_gradient` and `self_play`).
    needs_reference: whether `ref_logps` must be given (False: pass `ref_logps=None`).
    needs_lengths: whether `lengths` (completion token counts) must be given.
    extra_inputs: names of further keyword inputs the trainer must supply (e.g. "kl_logps").
    stateful: whether the objective takes `state=` and returns `(loss, new_state)`.
    init_state: for stateful objectives, a function `() -> state` giving the initial state.
    aliases: other names that resolve to this objective.
  """

  name: str
  fn: Objective
  paper: str
  family: str
  needs_reference: bool = True
  needs_lengths: bool = False
  extra_inputs: tuple[str, ...] = ()
  stateful: bool = False
  init_state: Optional[Callable[[], object]] = None
  aliases: tuple[str, ...] = ()


_SPECS: dict[str, ObjectiveSpec] = {}
_ALIASES: dict[str, str] = {}


def register(
    name: str,
    *,
    fn: Objective,
    paper: str,
    family: str,
    needs_reference: bool = True,
    needs_lengths: bool = False,
    extra_inputs: tuple[str, ...] = (),
    stateful: bool = False,
    init_state: Optional[Callable[[], object]] = None,
    aliases: tuple[str, ...] = (),
) -> Objective:
  """Registers the objective `fn` under `name` (and `aliases`); returns `fn`."""
  for key in (name, *aliases):
    if key in _SPECS or key in _ALIASES:
      raise ValueError(f"Objective name {key!r} is registered twice.")
  _SPECS[name] = ObjectiveSpec(
      name=name,
      fn=fn,
      paper=paper,
      family=family,
      needs_reference=needs_reference,
      needs_lengths=needs_lengths,
      extra_inputs=tuple(extra_inputs),
      stateful=stateful,
      init_state=init_state,
      aliases=tuple(aliases),
  )
  for alias in aliases:
    _ALIASES[alias] = name
  return fn


def _canonical(name: str) -> str:
  key = _ALIASES.get(name, name)
  if key not in _SPECS:
    known = ", ".join(names(include_aliases=True))
    raise KeyError(f"Unknown objective {name!r}. Known objectives: {known}.")
  return key


def spec(name: str) -> ObjectiveSpec:
  """The `ObjectiveSpec` of `name` (or of the objective it aliases)."""
  return _SPECS[_canonical(name)]


def get(name: str) -> Objective:
  """The objective function registered as `name`; unknown names raise a KeyError listing all."""
  return spec(name).fn


def names(*, include_aliases: bool = False, family: Optional[str] = None) -> list[str]:
  """Sorted registered names (optionally with aliases, or only one family)."""
  out = [n for n, s in _SPECS.items() if family is None or s.family == family]
  if include_aliases:
    out += [a for a, n in _ALIASES.items() if family is None or _SPECS[n].family == family]
  return sorted(out)
