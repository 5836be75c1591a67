"""Typed configs of the recipes: frozen dataclasses, and `from_dict` to build them from mappings.

A recipe takes one frozen dataclass whose fields are the sections it reads (`seed`, `task`,
`model`, `mesh`, and its own sections). `from_dict(Config, mapping)` builds it from nested plain
mappings (e.g. an `ml_collections.ConfigDict.to_dict()` in `experiments/`): top-level keys that
the recipe does not read are ignored, so one config file can feed several recipes, but an unknown
field inside a section is an error that names it (`config.train.lerning_rate`) and lists the
known ones. A section class may define `from_mapping(mapping, path)` to take free-form fields
(the model's `ModelConfig` overrides, an objective's hyper-parameters).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, Optional, TypeVar

import jax.numpy as jnp

T = TypeVar("T")


def _is_dataclass_type(tp: Any) -> bool:
  return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(tp: Any, value: Any, path: str) -> Any:
  """`value` as an instance of the annotation `tp` (dataclasses recursively, tuples from lists)."""
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if value is None:
      return None
    return _convert(args[0], value, path) if len(args) == 1 else value
  if _is_dataclass_type(tp):
    if isinstance(value, tp):
      return value
    if not isinstance(value, Mapping):
      raise TypeError(f"{path} must be a mapping of the fields of {tp.__name__}, got {value!r}.")
    return from_dict(tp, value, path=path, ignore_unknown=False)
  if origin is tuple and isinstance(value, (list, tuple)):
    return tuple(value)
  if tp is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if origin in (dict, Mapping) or tp in (dict, Mapping):
    return dict(value)
  return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, path: str = "config",
              ignore_unknown: bool = True) -> T:
  """An instance of the frozen dataclass `cls` from the nested mapping `data`.

  Missing fields take their defaults; a missing field without one, or an unknown field of a
  section (any level below the top when `ignore_unknown`), raises a ValueError naming its path.
  """
  if hasattr(cls, "from_mapping"):
    return cls.from_mapping(data, path)
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - set(fields))
  if unknown and not ignore_unknown:
    raise ValueError(f"{path} has unknown fields {[f'{path}.{k}' for k in unknown]}; known: "
                     f"{sorted(fields)}.")
  kwargs = {}
  for name, field in fields.items():
    if name in data:
      kwargs[name] = _convert(hints[name], data[name], f"{path}.{name}")
    elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
      raise ValueError(f"{path}.{name} is required ({cls.__name__}).")
  return cls(**kwargs)


def to_dict(config: Any) -> Any:
  """The nested plain mapping of a config (the inverse of `from_dict`)."""
  if dataclasses.is_dataclass(config) and not isinstance(config, type):
    if hasattr(config, "to_mapping"):
      return {k: to_dict(v) for k, v in config.to_mapping().items()}
    return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
  if isinstance(config, Mapping):
    return {k: to_dict(v) for k, v in config.items()}
  return config


def select(cls: type[T], config: Any, **changes: Any) -> T:
  """The `cls` config made of the same-named fields of the (larger) config `config`, with
  `changes`; e.g. the SFT stage's config taken from the demo's."""
  values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)
            if hasattr(config, f.name)}
  return cls(**{**values, **changes})


def replace_in(config: T, section: str, **changes: Any) -> T:
  """`config` with fields of its section `section` replaced (`dataclasses.replace` one level in)."""
  return dataclasses.replace(
      config, **{section: dataclasses.replace(getattr(config, section), **changes)})


class _NameAndOptions:
  """A section written `{"name": ..., **rest}`: its fields are `name` and a mapping of the rest."""

  @classmethod
  def from_mapping(cls, data: Mapping[str, Any], path: str):
    del path  # any other key is an option
    data = dict(data)
    return cls(data.pop("name", cls.name), data)

  def to_mapping(self) -> dict[str, Any]:
    options = getattr(self, dataclasses.fields(self)[1].name)
    return {"name": self.name, **options}


@dataclasses.dataclass(frozen=True)
class Task(_NameAndOptions):
  """A built-in synthetic task (`alignment.data.tasks.get_task(name, **options)`)."""

  name: str = "sorting"
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def build(self):
    from alignment.data import tasks  # pylint: disable=import-outside-toplevel
    return tasks.get_task(self.name, **dict(self.options))


@dataclasses.dataclass(frozen=True)
class Model:
  """The decoder: a preset (`alignment.models.config`) with `ModelConfig` field overrides, and
  the vocabulary chunk of the memory-safe log-probs."""

  preset: str = "tiny"
  logprob_chunk: int = 256
  # The demo's tiny decoder, float32 compute on CPU (vocab_size comes from the tokenizer).
  overrides: Mapping[str, Any] = dataclasses.field(
      default_factory=lambda: {"width": 64, "depth": 2, "mlp_dim": 192, "dtype": "float32"})

  @classmethod
  def from_mapping(cls, data: Mapping[str, Any], path: str) -> "Model":
    """`{"preset": ..., "logprob_chunk": ..., **ModelConfig fields}`."""
    from alignment.models import config as model_config  # pylint: disable=import-outside-toplevel
    data = dict(data)
    preset = data.pop("preset", cls.preset)
    chunk = int(data.pop("logprob_chunk", cls.logprob_chunk))
    known = {f.name for f in dataclasses.fields(model_config.ModelConfig)} - {"vocab_size"}
    unknown = sorted(set(data) - known)
    if unknown:
      raise ValueError(f"{path} has unknown fields {[f'{path}.{k}' for k in unknown]}; known: "
                       f"['preset', 'logprob_chunk', {', '.join(map(repr, sorted(known)))}].")
    return cls(preset=preset, logprob_chunk=chunk, overrides=data)

  def to_mapping(self) -> dict[str, Any]:
    return {"preset": self.preset, "logprob_chunk": self.logprob_chunk, **self.overrides}

  def build(self, vocab_size: int):
    """The `ModelConfig` of this preset with its overrides and `vocab_size`."""
    from alignment.models import config as model_config  # pylint: disable=import-outside-toplevel
    overrides = dict(self.overrides)
    if "dtype" in overrides:
      overrides["dtype"] = jnp.dtype(overrides["dtype"])
    return model_config.get_config(self.preset, **overrides, vocab_size=vocab_size)


@dataclasses.dataclass(frozen=True)
class Mesh:
  """Device mesh axis sizes (-1: the rest) and sharding strategy (`alignment.parallel`)."""

  shape: Mapping[str, int] = dataclasses.field(default_factory=lambda: {"data": -1})
  strategy: str = "dp"


@dataclasses.dataclass(frozen=True)
class Run:
  """The sections of a run on a synthetic task: the seed, the task, the decoder and the device
  mesh. A recipe's `Config` extends it with its own sections."""

  seed: int = 0
  task: Task = Task()
  model: Model = Model()
  mesh: Mesh = Mesh()


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optax optimiser and schedule (`alignment.training.optim.make_optimizer`)."""

  name: str = "adamw"
  learning_rate: float = 1e-3
  schedule: str = "constant"
  warmup_steps: int = 0
  total_steps: int = 0
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  momentum: Optional[float] = None
  clip_norm: float = 1.0


@dataclasses.dataclass(frozen=True)
class Loss(_NameAndOptions):
  """A registered objective by name (or TRL name) and its keyword hyper-parameters.

  Built from a mapping, unset (None) hyper-parameters are dropped: the objective's defaults
  apply. On construction the name and hyper-parameters are checked against the registry
  (`alignment.losses.registry.check_hyper_parameters`), before any training.
  """

  name: str = "dpo"
  hyper_parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    from alignment.losses import registry  # pylint: disable=import-outside-toplevel
    registry.check_hyper_parameters(self.name, self.hyper_parameters)

  @classmethod
  def from_mapping(cls, data: Mapping[str, Any], path: str) -> "Loss":
    return super().from_mapping({k: v for k, v in data.items() if v is not None}, path)


def task_and_model(task: Task, model: Model):
  """The task of `task` and the `ModelConfig` of `model` sized to the task's tokenizer."""
  built = task.build()
  return built, model.build(built.tokenizer.vocab_size)
