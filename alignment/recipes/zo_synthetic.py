r"""ZO-RankSGD synthetic study: Rosenbrock and a low-rank quadratic, d = 100.

The protocol of *Zeroth-Order Optimization Meets Human Feedback: Provable Learning via Ranking
Oracles* (Tang, Rybin, Chang; ICLR 2024), as described in `docs/zo.md`. All methods start from
the same `x_0 ~ N(0, I_d)` per seed, make m = 10 queries per iteration and (except GLD and
CMA-ES, which choose their own steps) take unit-length steps (η = 1 along a normalised
direction); μ = 0.1; 100 iterations; 10 seeds, vectorised over seeds with `vmap`. Writes to the
workdir `summary.json` (final objective mean ± std per method and function, the (m, k) ablation,
a one-sentence comparison), `objective_vs_queries.png` and `ablation.png`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from alignment import zo
from alignment.recipes import plots


@dataclasses.dataclass(frozen=True)
class Config:
  """The study's protocol; `ablation_*`: the (m, k) grid on Rosenbrock at an equal budget of
  `ablation_budget` queries, with the cosine to ∇f(x_0) averaged over `cosine_draws` estimates."""

  d: int = 100
  m: int = 10
  ks: tuple[int, ...] = (1, 3, 5, 9, 10)
  mu: float = 0.1
  learning_rate: float = 1.0
  iterations: int = 100
  seeds: int = 10
  functions: tuple[str, ...] = ("rosenbrock", "low_rank_quadratic")
  ablation_ms: tuple[int, ...] = (2, 5, 10, 20)
  ablation_budget: int = 1000
  cosine_draws: int = 256


def fast_config() -> Config:
  """A smoke-run size of the study (2 seeds, 5 iterations, a small ablation)."""
  return Config(iterations=5, seeds=2, ks=(1, 9), ablation_ms=(2, 10), ablation_budget=40,
                cosine_draws=16)


# ------------------------------------------------------------------------------------------
# Problems: f(x, params); params are per seed so that everything vmaps over seeds.


def _rosenbrock(x, params):
  del params
  return zo.rosenbrock(x)


def _quadratic(x, params):
  return zo.low_rank_quadratic(x, *params)


def _problem(name: str, key: jax.Array, d: int):
  if name == "rosenbrock":
    return _rosenbrock, jnp.zeros(())
  if name == "low_rank_quadratic":
    return _quadratic, zo.sample_low_rank_quadratic(key, d)
  raise ValueError(f"unknown function {name!r}; known: 'rosenbrock', 'low_rank_quadratic'.")


def _methods(config: Config) -> dict[str, tuple[zo.ZeroOrderOptimizer, Callable]]:
  """name -> (optimizer, make_oracle(f)); ZO-RankSGD sees rankings only."""
  eta, m, mu = config.learning_rate, config.m, config.mu
  methods = {}
  for k in config.ks:
    methods[f"zo_rank_sgd_k{k}"] = (
        zo.zo_rank_sgd(eta, m=m, mu=mu),
        functools.partial(lambda f, k_: zo.exact_oracle(f, k=k_), k_=k))
  methods["zo_sgd"] = (zo.zo_sgd(eta, m=m, mu=mu), lambda f: f)
  methods["comparison_zo"] = (zo.comparison_zo(eta, m=m, mu=mu), lambda f: f)
  methods["gld"] = (zo.gld(m=m), lambda f: f)
  methods["normalized_gd"] = (zo.normalized_gd(eta), lambda f: f)
  return methods


def _trajectories(opt, make_oracle, f, params, x0s, keys, iterations):
  """`[seeds, iterations + 1]` objective values f(x_t), vmapped over seeds."""

  def one(x0, key, p):
    objective = functools.partial(f, params=p)
    oracle = make_oracle(objective)

    def body(carry, _):
      x, key = carry
      x, key, _ = opt.step(x, key, oracle)
      return (x, key), objective(x)

    _, values = jax.lax.scan(body, (x0, key), None, length=iterations)
    return jnp.concatenate([objective(x0)[None], values])

  return np.asarray(jax.jit(jax.vmap(one))(x0s, keys, params))


def _seed_setup(config: Config, name: str):
  """Per seed: x_0, the problem's params and a method key (shared by all methods)."""
  seeds = jnp.arange(config.seeds)
  keys = jax.vmap(jax.random.PRNGKey)(seeds)
  x_keys, p_keys, m_keys = jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k, 3))(keys), 1, 0)
  x0s = jax.vmap(lambda k: jax.random.normal(k, (config.d,), jnp.float32))(x_keys)
  f, _ = _problem(name, p_keys[0], config.d)
  params = jax.vmap(lambda k: _problem(name, k, config.d)[1])(p_keys)
  return f, params, x0s, m_keys


def _stats(values: np.ndarray) -> dict[str, float]:
  final = values[:, -1]
  return {"final_mean": float(final.mean()), "final_std": float(final.std()),
          "start_mean": float(values[:, 0].mean()),
          "final_over_start_max": float(np.max(final / values[:, 0])),
          "final_per_seed": final.tolist()}


def _study(config: Config) -> dict[str, dict[str, np.ndarray]]:
  """All methods on all functions: name -> method -> `[seeds, iterations + 1]`."""
  curves = {}
  for name in config.functions:
    f, params, x0s, keys = _seed_setup(config, name)
    curves[name] = {}
    for method, (opt, make_oracle) in _methods(config).items():
      start = time.time()
      curves[name][method] = _trajectories(opt, make_oracle, f, params, x0s, keys,
                                           config.iterations)
      print(f"[zo_synthetic] {name} / {method}: final {curves[name][method][:, -1].mean():.4g} "
            f"({time.time() - start:.1f}s)", flush=True)
    start = time.time()
    cma_values = []
    for s in range(config.seeds):
      p_s = jax.tree_util.tree_map(lambda a, s=s: a[s], params)
      cma_values.append(zo.cma_es(functools.partial(f, params=p_s), x0s[s], popsize=config.m,
                                  sigma0=config.mu, iterations=config.iterations,
                                  seed=s)["values"])
    curves[name]["cma_es"] = np.stack(cma_values)
    print(f"[zo_synthetic] {name} / cma_es: final {curves[name]['cma_es'][:, -1].mean():.4g} "
          f"({time.time() - start:.1f}s)", flush=True)
  return curves


def _cosine(objective, x0, *, m: int, k: int, mu: float, draws: int) -> float:
  """Mean cosine between the rank estimate and ∇f(x0) over `draws` estimates."""
  grad = jax.grad(objective)(x0)
  oracle = zo.exact_oracle(objective, k=k)

  def cos(key):
    g, _ = zo.rank_grad_estimate(x0, key, oracle, m=m, mu=mu)
    return g @ grad / (jnp.linalg.norm(g) * jnp.linalg.norm(grad) + 1e-30)

  keys = jax.random.split(jax.random.PRNGKey(1234), draws)
  return float(jnp.mean(jax.jit(jax.vmap(cos))(keys)))


def _ablation(config: Config) -> list[dict[str, float]]:
  """(m, k) grid on Rosenbrock at an equal query budget (iterations = budget // m)."""
  f, params, x0s, keys = _seed_setup(config, "rosenbrock")
  rows = []
  for m in config.ablation_ms:
    for k in sorted({1, max(1, m // 2), m - 1, m}):
      iterations = config.ablation_budget // m
      opt = zo.zo_rank_sgd(config.learning_rate, m=m, mu=config.mu)
      values = _trajectories(opt, lambda fn, k_=k: zo.exact_oracle(fn, k=k_), f, params, x0s,
                             keys, iterations)
      rows.append({"m": m, "k": k, "iterations": iterations,
                   "final_mean": float(values[:, -1].mean()),
                   "final_std": float(values[:, -1].std()),
                   "cosine_with_gradient": _cosine(
                       functools.partial(f, params=params[0]), x0s[0], m=m, k=k,
                       mu=config.mu, draws=config.cosine_draws)})
      print(f"[zo_synthetic] ablation m={m} k={k}: {rows[-1]}", flush=True)
  return rows


def _sentence(summary: dict) -> str:
  parts = []
  for name, methods in summary["functions"].items():
    best_k = min((mth for mth in methods if mth.startswith("zo_rank_sgd")),
                 key=lambda mth: methods[mth]["final_mean"])
    rank, value, cma = methods[best_k], methods["zo_sgd"], methods["cma_es"]

    def verdict(other, rank=rank):
      return "lower than" if rank["final_mean"] < other["final_mean"] else "higher than"

    parts.append(
        f"on {name}, ZO-RankSGD ({best_k.split('_')[-1]}, rankings only) ends at "
        f"{rank['final_mean']:.4g} ± {rank['final_std']:.3g}, {verdict(value)} value-based "
        f"ZO-SGD ({value['final_mean']:.4g} ± {value['final_std']:.3g}) and {verdict(cma)} "
        f"CMA-ES ({cma['final_mean']:.4g} ± {cma['final_std']:.3g})")
  return ("With equal query budgets (m = 10 per iteration) " + "; ".join(parts) + ".")


def _plot(curves, ablation, config: Config, workdir: str) -> None:
  plt = plots.pyplot()

  fig, axes = plt.subplots(1, len(curves), figsize=(6.5 * len(curves), 4.5))
  for ax, (name, methods) in zip(np.atleast_1d(axes), curves.items()):
    for method, values in methods.items():
      queries = np.arange(values.shape[1]) * config.m
      mean, std = values.mean(0), values.std(0)
      ax.plot(queries, mean, label=method, lw=1.2)
      ax.fill_between(queries, mean - std, mean + std, alpha=0.15)
    ax.set_yscale("log" if name == "rosenbrock" else "symlog")
    ax.set_xlabel("oracle queries")
    ax.set_ylabel("f(x_t)  (mean ± std over seeds)")
    ax.set_title(f"{name}, d={config.d}, m={config.m}, μ={config.mu}")
  np.atleast_1d(axes)[0].legend(fontsize=7)
  plots.save(fig, os.path.join(workdir, "objective_vs_queries.png"))

  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  labels = [f"m={r['m']},k={r['k']}" for r in ablation]
  axes[0].bar(labels, [r["final_mean"] for r in ablation],
              yerr=[r["final_std"] for r in ablation])
  axes[0].set_yscale("log")
  axes[0].set_title(f"Rosenbrock final f, budget {config.ablation_budget} queries")
  axes[1].bar(labels, [r["cosine_with_gradient"] for r in ablation])
  axes[1].set_title("mean cos(estimate, ∇f) at x_0")
  for ax in axes:
    ax.tick_params(axis="x", rotation=70, labelsize=7)
  plots.save(fig, os.path.join(workdir, "ablation.png"))


def run(config: Config, workdir: str) -> dict:
  """Runs the study, writes summary.json and the PNGs into `workdir`, returns the summary."""
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  curves = _study(config)
  ablation = _ablation(config)
  summary = {
      "config": dataclasses.asdict(config),
      "functions": {name: {method: _stats(values) for method, values in methods.items()}
                    for name, methods in curves.items()},
      "ablation": ablation,
  }
  if "rosenbrock" in curves and f"zo_rank_sgd_k{config.m - 1}" in curves["rosenbrock"]:
    ratios = curves["rosenbrock"][f"zo_rank_sgd_k{config.m - 1}"]
    ratios = ratios[:, -1] / ratios[:, 0]
    summary["rosenbrock_k_m_minus_1_final_over_start"] = ratios.tolist()
    summary["rosenbrock_k_m_minus_1_below_5pct_every_seed"] = bool(np.all(ratios < 0.05))
  summary["sentence"] = _sentence(summary)
  summary["runtime_s"] = time.time() - start
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as fh:
    json.dump(summary, fh, indent=1)
  _plot(curves, ablation, config, workdir)
  print(f"[zo_synthetic] {summary['sentence']}", flush=True)
  return summary
