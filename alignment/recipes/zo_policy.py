r"""Policy search from ranked returns: ZO-RankSGD vs a value-based ES on CartPole.

The policy-search setting of *Zeroth-Order Optimization Meets Human Feedback: Provable Learning
via Ranking Oracles* (Tang, Rybin, Chang; ICLR 2024), described in `docs/zo.md`. A linear policy
(`push right iff w·s + b > 0`, 5 parameters, started at 0) on the JAX-native CartPole of
`alignment.zo.policy` (horizon 500). Every iteration both methods run m = 10 training episodes
(one per perturbed policy `θ + μξ_i`), so the episode budgets are equal: ZO-RankSGD is told only
the top-k order of the returns, the evolution strategy (*Evolution Strategies as a Scalable
Alternative to Reinforcement Learning*, Salimans et al., 2017) sees the returns. Both take steps
of length η along the normalised direction. The current policy is evaluated on fresh episodes
that are not counted in the budget. Writes `summary.json` and `return_vs_episodes.png`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from alignment import zo
from alignment.recipes import plots
from alignment.zo import policy

SOLVED = 475.0  # CartPole-v1's "solved" threshold (at horizon 500)


@dataclasses.dataclass(frozen=True)
class Config:
  """m episodes per iteration for every method; ZO-RankSGD with each top-k of `ks`."""

  m: int = 10
  ks: tuple[int, ...] = (1, 5, 10)
  mu: float = 0.1
  learning_rate: float = 0.1
  iterations: int = 50
  seeds: int = 10
  horizon: int = 500
  eval_episodes: int = 16


def fast_config() -> Config:
  """A smoke-run size (2 seeds, 3 iterations, horizon 100)."""
  return Config(iterations=3, seeds=2, ks=(5,), horizon=100, eval_episodes=4)


def _curves(config: Config, opt, oracle, return_fn) -> np.ndarray:
  """Evaluation return `[seeds, iterations + 1]` of the current policy, vmapped over seeds."""

  def evaluate(theta, key):
    keys = jax.random.split(key, config.eval_episodes)
    return jnp.mean(jax.vmap(return_fn, in_axes=(None, 0))(theta, keys))

  def one(key):
    train_key, eval_key = jax.random.split(key)
    theta = policy.init_linear_policy()

    def body(carry, t):
      theta, key = carry
      theta, key, _ = opt.step(theta, key, oracle)
      return (theta, key), evaluate(theta, jax.random.fold_in(eval_key, t + 1))

    _, returns = jax.lax.scan(body, (theta, train_key), jnp.arange(config.iterations))
    return jnp.concatenate([evaluate(theta, jax.random.fold_in(eval_key, 0))[None], returns])

  keys = jax.random.split(jax.random.PRNGKey(0), config.seeds)
  return np.asarray(jax.jit(jax.vmap(one))(keys))


def _episodes_to_solve(values: np.ndarray, config: Config) -> list:
  """Per seed, the training episodes spent when the evaluation return first reached "solved"
  (scaled to the horizon), or None."""
  hits = values >= config.horizon * SOLVED / 500.0
  first = np.where(hits.any(1), hits.argmax(1), -1)
  return [int(i * config.m) if i >= 0 else None for i in first]


def _sentence(summary: dict, config: Config) -> str:
  methods = summary["methods"]
  es = methods["evolution_strategy"]
  best = max((n for n in methods if n.startswith("zo_rank")),
             key=lambda n: methods[n]["mean_return_over_run"])
  rank = methods[best]
  return (
      f"At equal budgets of {config.m * config.iterations} training episodes, ZO-RankSGD "
      f"({best.split('_')[-1]}, return rankings only) reaches a final return of "
      f"{rank['final_return_mean']:.1f} ± {rank['final_return_std']:.1f} (mean over the run "
      f"{rank['mean_return_over_run']:.1f}) against {es['final_return_mean']:.1f} ± "
      f"{es['final_return_std']:.1f} (mean {es['mean_return_over_run']:.1f}) for the value-based "
      f"evolution strategy.")


def _plot(curves: dict, config: Config, path: str) -> None:
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for name, values in curves.items():
    episodes = np.arange(values.shape[1]) * config.m
    mean, std = values.mean(0), values.std(0)
    ax.plot(episodes, mean, label=name)
    ax.fill_between(episodes, mean - std, mean + std, alpha=0.15)
  ax.set_xlabel("training episodes")
  ax.set_ylabel("evaluation return (mean ± std over seeds)")
  ax.set_title(f"CartPole, linear policy, m={config.m}, μ={config.mu}, η={config.learning_rate}")
  ax.legend()
  plots.save(fig, path)


def run(config: Config, workdir: str) -> dict:
  """Runs the comparison; writes summary.json and return_vs_episodes.png; returns the summary."""
  os.makedirs(workdir, exist_ok=True)
  start = time.time()

  def return_fn(theta, key):
    return policy.cartpole_return(theta, key, horizon=config.horizon)

  methods = {
      f"zo_rank_sgd_k{k}": (zo.zo_rank_sgd(config.learning_rate, m=config.m, mu=config.mu),
                            zo.returns_oracle(return_fn, k=k))
      for k in config.ks
  }
  methods["evolution_strategy"] = (
      zo.evolution_strategy(config.learning_rate, m=config.m, mu=config.mu),
      zo.negated_returns(return_fn))
  curves = {}
  for name, (opt, oracle) in methods.items():
    curves[name] = _curves(config, opt, oracle, return_fn)
    print(f"[zo_policy] {name}: final return {curves[name][:, -1].mean():.1f}", flush=True)

  summary = {
      "config": dataclasses.asdict(config),
      "episodes_per_iteration": config.m,
      "methods": {name: {"final_return_mean": float(v[:, -1].mean()),
                         "final_return_std": float(v[:, -1].std()),
                         "mean_return_over_run": float(v.mean()),
                         "episodes_to_solve_per_seed": _episodes_to_solve(v, config)}
                  for name, v in curves.items()},
  }
  summary["sentence"] = _sentence(summary, config)
  summary["runtime_s"] = time.time() - start
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as fh:
    json.dump(summary, fh, indent=1)
  _plot(curves, config, os.path.join(workdir, "return_vs_episodes.png"))
  print(f"[zo_policy] {summary['sentence']}", flush=True)
  return summary
