"""Name -> objective registry (`losses.get("dpo")`, `losses.names()`).

Each objective module ends with `register(name, fn=..., ...)` calls for its objectives; importing
`alignment.losses` registers them all, and experiments select a loss by name from config. The
spec records what the training layer must feed the objective; `hyper_parameters(name)` lists the
keyword settings it takes and `check_hyper_parameters` validates a config's against them.

TRL's names (`TRL_NAMES`): every `loss_type` of TRL's `DPOTrainer` and `KTOTrainer` that one of
ours computes exactly is also a name here (`sigmoid` -> `dpo`, `robust` -> `rdpo`, ...); the table
also says which settings of ours reproduce TRL's `CPOTrainer`, `ORPOTrainer` and `BCOTrainer`, and
how TRL's hyper-parameter names map onto ours (`docs/objectives.md`, "TRL names").
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import numbers
from typing import Any, Callable, Mapping, Optional

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


@dataclasses.dataclass(frozen=True)
class TrlName:
  """A loss of TRL (Hugging Face's `trl` library) and the registered objective equal to it.

  Attributes:
    trainer: TRL's trainer class, e.g. "DPOTrainer".
    loss_type: its `loss_type` value ("" for a trainer with a single loss).
    objective: our registry name computing the same loss.
    notes: our settings that reproduce TRL's, TRL's hyper-parameter names where ours differ, and
      version differences.
  """

  trainer: str
  loss_type: str
  objective: str
  notes: str = ""


# The trainers whose `loss_type` values are also registry names (aliases when they differ).
TRL_ALIAS_TRAINERS = ("DPOTrainer", "KTOTrainer")
_AOT_NOTE = "TRL sorts each device's batch, ours the global batch (equal on one device)"
TRL_NAMES: tuple[TrlName, ...] = (
    TrlName("DPOTrainer", "sigmoid", "dpo",
            "TRL <= v0.28 applies `label_smoothing` (cDPO) as ours does; TRL >= v0.29 ignores it "
            "here"),
    TrlName("DPOTrainer", "hinge", "hinge", "β = 1/margin"),
    TrlName("DPOTrainer", "ipo", "ipo_mean", "`beta` is the paper's τ; per-token mean log-ratios"),
    TrlName("DPOTrainer", "exo_pair", "exo_pair",
            "`label_smoothing` is ε; TRL's default 0 gives an infinite loss, ours is 1e-3"),
    TrlName("DPOTrainer", "nca_pair", "nca_pair"),
    TrlName("DPOTrainer", "robust", "rdpo",
            "`label_smoothing` is the flip rate ε (TRL's default 0, ours 0.1)"),
    TrlName("DPOTrainer", "bco_pair", "bco_pair_noshift",
            "TRL >= v0.29; TRL <= v0.28's `bco_pair` (running-mean shift) is `bco_pair_shift`"),
    TrlName("DPOTrainer", "sppo_hard", "sppo_hard"),
    TrlName("DPOTrainer", "aot", "aot_paired", _AOT_NOTE),
    TrlName("DPOTrainer", "aot_unpaired", "aot_unpaired", _AOT_NOTE),
    TrlName("DPOTrainer", "aot_pair", "aot_unpaired", "TRL's older name of `aot_unpaired`"),
    TrlName("DPOTrainer", "apo_zero", "apo_zero"),
    TrlName("DPOTrainer", "apo_down", "apo_down"),
    TrlName("DPOTrainer", "discopop", "discopop", "TRL's `discopop_tau` is `tau`"),
    TrlName("DPOTrainer", "sft", "sft", "token mean over the batch's chosen tokens, as TRL"),
    TrlName("DPOTrainer", "sigmoid_norm", "ln_dpo"),
    TrlName("KTOTrainer", "kto", "kto", "same `desirable_weight`, `undesirable_weight`"),
    TrlName("KTOTrainer", "apo_zero_unpaired", "apo_zero_unpaired"),
    TrlName("BCOTrainer", "", "bco", "`delta=\"pooled\"`; TRL's density-ratio (UDM) weights are "
            "the `udm_weights` input"),
    TrlName("CPOTrainer", "sigmoid", "cpo_contrastive", "`margin=\"sigmoid\"`; same `cpo_alpha`, "
            "`label_smoothing`"),
    TrlName("CPOTrainer", "hinge", "cpo_contrastive", "`margin=\"hinge\"`; same `cpo_alpha`"),
    TrlName("CPOTrainer", "ipo", "cpo_contrastive", "`margin=\"ipo\"`; same `cpo_alpha`"),
    TrlName("CPOTrainer", "simpo", "cpo_contrastive",
            "`margin=\"simpo\"`; same `cpo_alpha`, `simpo_gamma`, `label_smoothing`"),
    TrlName("CPOTrainer", "simpo", "simpo",
            "with TRL's `cpo_alpha=0`; TRL's `simpo_gamma` is `gamma` (defaults: TRL β = 0.1, "
            "γ = 0.5; ours the paper's 2.5, 1.375)"),
    TrlName("CPOTrainer", "simpo", "alphapo",
            "with TRL's `cpo_alpha=0` and `alpha` != 0; TRL's `simpo_gamma` is `gamma`"),
    TrlName("ORPOTrainer", "", "orpo", "TRL's `beta` (the paper's λ) is `beta`"),
)
# TRL's `f_divergence_type` (DPOTrainer) is our `fdiv`, its "alpha_divergence" our "alpha_div_trl".

_SPECS: dict[str, ObjectiveSpec] = {}
_ALIASES: dict[str, str] = {}
# Keyword-only parameters that carry data or training-loop plumbing, not settings.
_NOT_HYPER_PARAMETERS = frozenset(
    {"where", "weights", "reduce_fn", "lengths", "state", "training", "key", "udm_weights",
     "online_where"})


def _trl_aliases(name: str, aliases: tuple[str, ...]) -> tuple[str, ...]:
  """TRL `loss_type` names (of `TRL_ALIAS_TRAINERS`) of objective `name` not among `aliases`."""
  return tuple(t.loss_type for t in TRL_NAMES
               if t.objective == name and t.trainer in TRL_ALIAS_TRAINERS
               and t.loss_type not in (name, *aliases))


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
  """Registers the objective `fn` under `name`, `aliases` and its TRL names; returns `fn`."""
  aliases = (*aliases, *_trl_aliases(name, tuple(aliases)))
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


def _did_you_mean(name: str, known: list[str]) -> str:
  """" Did you mean 'a' or 'b'?" for the known names closest to `name` (difflib), else ""."""
  close = [repr(k) for k in difflib.get_close_matches(name, known)]
  if not close:
    return ""
  return " Did you mean " + (close[0] if len(close) == 1 else
                             ", ".join(close[:-1]) + " or " + close[-1]) + "?"


def _canonical(name: str) -> str:
  key = _ALIASES.get(name, name)
  if key not in _SPECS:
    known = names(include_aliases=True)
    raise KeyError(f"Unknown objective {name!r}.{_did_you_mean(name, known)} Known objectives: "
                   f"{', '.join(known)}.")
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


def hyper_parameters(name: str) -> dict[str, Any]:
  """The keyword hyper-parameters of objective `name` and their defaults.

  The keyword-only parameters of its function (`inspect.signature`) other than inputs (`where`,
  `weights`, `lengths`, the spec's `extra_inputs`, ...), `reduce_fn` and state plumbing; a
  required one has the default `inspect.Parameter.empty`.
  """
  s = spec(name)
  skip = _NOT_HYPER_PARAMETERS | set(s.extra_inputs)
  return {p.name: p.default for p in inspect.signature(s.fn).parameters.values()
          if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in skip}


def hyper_parameter_names() -> list[str]:
  """Sorted union of the hyper-parameter names of every registered objective."""
  return sorted({h for n in _SPECS for h in hyper_parameters(n)})


def _kind(default: Any) -> Optional[tuple[str, Callable[[Any], bool]]]:
  """What a value must be where the default is `default`: a bool, a number, a string (or a
  callable, e.g. an `fdiv` function); None (anything) where the default is None or absent."""
  if isinstance(default, bool):
    return "a bool", lambda v: isinstance(v, bool)
  if isinstance(default, numbers.Real):
    return "a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)
  if isinstance(default, str):
    return "a string", lambda v: isinstance(v, str) or callable(v)
  return None


def _describe(hypers: Mapping[str, Any]) -> str:
  return ", ".join(k if v is inspect.Parameter.empty else f"{k}={v!r}" for k, v in hypers.items())


def check_hyper_parameters(name: str, values: Mapping[str, Any]) -> None:
  """Raises unless `values` are hyper-parameters that objective `name` takes, of its kinds.

  An unknown objective raises the KeyError of `spec`; a name the objective does not take a
  ValueError naming it and listing the objective's own hyper-parameters; a value of another kind
  than the default (a string for a number, ...) a TypeError. Ranges are the objective's to check.
  """
  hypers = hyper_parameters(name)
  unknown = sorted(set(values) - set(hypers))
  if unknown:
    raise ValueError(f"Objective {name!r} takes no hyper-parameter(s) {unknown}; its "
                     f"hyper-parameters: {_describe(hypers) or 'none'}.")
  for key, value in values.items():
    kind = _kind(hypers[key])
    if kind is not None and not kind[1](value):
      raise TypeError(f"Objective {name!r}: hyper-parameter {key}={value!r} must be {kind[0]} "
                      f"(default {hypers[key]!r}).")
