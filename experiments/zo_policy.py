r"""Policy search from ranked returns: ZO-RankSGD vs a value-based ES on CartPole (§7.3, §7.5).

A linear policy (`push right iff w·s + b > 0`, 5 parameters, started at 0) on the JAX-native
CartPole of `alignment.zo.policy` (horizon 500). Every iteration both methods run m = 10
training episodes (one per perturbed policy `θ + μξ_i`), so the episode budgets are equal:
ZO-RankSGD is told only the top-k order of the returns, the evolution strategy sees the returns.
Both take steps of length η along the normalised direction. The current policy is evaluated on
fresh episodes that are not counted in the budget. Writes `summary.json` and
`return_vs_episodes.png` to `--workdir`.

  python -m experiments.zo_policy --workdir=/tmp/zo_policy [--fast]
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alignment import zo
from alignment.zo import policy
from experiments import _overrides, _plots

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Output directory.", required=True)
  flags.DEFINE_integer("seeds", 10, "Number of seeds.")
  flags.DEFINE_integer("iterations", 50, "Iterations (m episodes each).")
  flags.DEFINE_bool("fast", False, "Tiny smoke run.")

SOLVED = 475.0  # CartPole-v1's "solved" threshold


def get_config(fast: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.m = 10
  c.ks = (1, 5, 10)
  c.mu = 0.1
  c.learning_rate = 0.1
  c.iterations = 50
  c.seeds = 10
  c.horizon = 500
  c.eval_episodes = 16
  if fast:
    c.iterations, c.seeds, c.ks, c.horizon, c.eval_episodes = 3, 2, (5,), 100, 4
  return c


def _curves(config, opt, oracle, return_fn) -> np.ndarray:
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


def run(config_or_args: Any, workdir: str) -> dict:
  """Runs the comparison; writes summary.json and return_vs_episodes.png; returns the summary."""
  config = _overrides.resolve_config(config_or_args, get_config, ("seeds", "iterations"),
                                     where="zo_policy.run")
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
    logging.info("%s: final return %.1f", name, curves[name][:, -1].mean())

  solved_at = config.horizon * SOLVED / 500.0

  def episodes_to_solve(values):
    hits = values >= solved_at
    first = np.where(hits.any(1), hits.argmax(1), -1)
    return [int(i * config.m) if i >= 0 else None for i in first]

  summary = {
      "config": config.to_dict(),
      "episodes_per_iteration": config.m,
      "methods": {name: {"final_return_mean": float(v[:, -1].mean()),
                         "final_return_std": float(v[:, -1].std()),
                         "mean_return_over_run": float(v.mean()),
                         "episodes_to_solve_per_seed": episodes_to_solve(v)}
                  for name, v in curves.items()},
  }
  es = summary["methods"]["evolution_strategy"]
  best = max((n for n in summary["methods"] if n.startswith("zo_rank")),
             key=lambda n: summary["methods"][n]["mean_return_over_run"])
  rank = summary["methods"][best]
  summary["sentence"] = (
      f"At equal budgets of {config.m * config.iterations} training episodes, ZO-RankSGD "
      f"({best.split('_')[-1]}, return rankings only) reaches a final return of "
      f"{rank['final_return_mean']:.1f} ± {rank['final_return_std']:.1f} (mean over the run "
      f"{rank['mean_return_over_run']:.1f}) against {es['final_return_mean']:.1f} ± "
      f"{es['final_return_std']:.1f} (mean {es['mean_return_over_run']:.1f}) for the value-based "
      f"evolution strategy.")
  summary["runtime_s"] = time.time() - start
  with open(os.path.join(workdir, "summary.json"), "w") as fh:
    json.dump(summary, fh, indent=1)

  plt = _plots.pyplot()
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
  _plots.save(fig, os.path.join(workdir, "return_vs_episodes.png"))
  logging.info("%s", summary["sentence"])
  return summary


def main(argv):
  del argv
  overrides = {"fast": FLAGS.fast}
  for name in ("seeds", "iterations"):
    if FLAGS[name].present or not FLAGS.fast:
      overrides[name] = FLAGS[name].value
  run(overrides, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
