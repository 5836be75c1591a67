"""The config of a ZO binary's `run(config_or_args, workdir)` from a config or from overrides."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import ml_collections


def resolve_config(config_or_args: Any, get_config: Callable[..., ml_collections.ConfigDict],
                   names: Sequence[str], *, where: str,
                   section: Optional[str] = None) -> ml_collections.ConfigDict:
  """A ConfigDict as given; otherwise `get_config(fast=...)` with overrides applied.

  Overrides come from a dict, or from the attributes `fast` and `names` of a flag namespace;
  `fast` selects the config, a None value keeps the default, and the others are written into
  `config[section]` (the top level when `section` is None). An override outside `names` raises a
  ValueError naming `where` and the known ones.
  """
  if isinstance(config_or_args, ml_collections.ConfigDict):
    return config_or_args
  if isinstance(config_or_args, dict):
    overrides = dict(config_or_args)
  else:
    overrides = {name: getattr(config_or_args, name)
                 for name in ("fast", *names) if hasattr(config_or_args, name)}
  config = get_config(fast=bool(overrides.pop("fast", False)))
  unknown = sorted(set(overrides) - set(names))
  if unknown:
    raise ValueError(f"{where}: unknown overrides {unknown}; known: {list(names)}.")
  target = config[section] if section else config
  for name, value in overrides.items():
    if value is not None:
      target[name] = value
  return config
