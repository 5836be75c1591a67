"""optax optimisers and learning-rate schedules from config.

Config fields (`ml_collections.ConfigDict` or any attribute object):
  name: "adamw" | "adam" | "sgd" | "lion"; learning_rate; schedule: "constant" | "cosine" |
  "linear"; warmup_steps; total_steps; weight_decay (adamw, lion); b1, b2, eps (adam family);
  momentum (sgd); clip_norm (global-norm clipping, 0 or None disables).
"""

from __future__ import annotations

import optax

_OPTIMIZERS = ("adamw", "adam", "sgd", "lion")
_SCHEDULES = ("constant", "cosine", "linear")


def _get(cfg, name, default):
  return getattr(cfg, name, default)


def make_schedule(cfg) -> optax.Schedule:
  """Warm-up (linear from 0) followed by a constant, cosine or linear-decay schedule."""
  lr = float(cfg.learning_rate)
  kind = _get(cfg, "schedule", "constant")
  warmup = int(_get(cfg, "warmup_steps", 0))
  total = int(_get(cfg, "total_steps", 0))
  if kind not in _SCHEDULES:
    raise ValueError(f"optimizer.schedule must be one of {_SCHEDULES}, got {kind!r}.")
  if lr <= 0:
    raise ValueError(f"optimizer.learning_rate must be > 0, got {lr}.")
  if warmup < 0:
    raise ValueError(f"optimizer.warmup_steps must be >= 0, got {warmup}.")
  if kind != "constant" and total <= warmup:
    raise ValueError(
        f"optimizer.total_steps ({total}) must exceed warmup_steps ({warmup}) for a {kind!r} "
        "schedule."
    )
  decay_steps = max(total - warmup, 1)
  if kind == "constant":
    main = optax.constant_schedule(lr)
  elif kind == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps)
  else:
    main = optax.linear_schedule(lr, 0.0, decay_steps)
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(cfg) -> optax.GradientTransformation:
  """The optimiser described by `cfg`, with global-norm clipping first when `clip_norm > 0`."""
  name = _get(cfg, "name", "adamw")
  if name not in _OPTIMIZERS:
    raise ValueError(f"optimizer.name must be one of {_OPTIMIZERS}, got {name!r}.")
  schedule = make_schedule(cfg)
  wd = float(_get(cfg, "weight_decay", 0.0))
  b1 = float(_get(cfg, "b1", 0.9))
  b2 = float(_get(cfg, "b2", 0.99 if name == "lion" else 0.999))
  eps = float(_get(cfg, "eps", 1e-8))
  if name == "adamw":
    opt = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=wd)
  elif name == "adam":
    opt = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
  elif name == "lion":
    opt = optax.lion(schedule, b1=b1, b2=b2, weight_decay=wd)
  else:
    opt = optax.sgd(schedule, momentum=_get(cfg, "momentum", None) or None)
  clip = _get(cfg, "clip_norm", None)
  if clip:
    if clip < 0:
      raise ValueError(f"optimizer.clip_norm must be >= 0, got {clip}.")
    opt = optax.chain(optax.clip_by_global_norm(float(clip)), opt)
  return opt
