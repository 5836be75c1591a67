"""Baselines of the ZO-RankSGD synthetic benchmark (Tang et al., ICLR 2024), m queries each.

Every baseline except CMA-ES is a `ZeroOrderOptimizer` (same `init`/`update`/`step` as
`zo_rank_sgd`) whose "oracle" argument is the objective itself, `f(x) -> scalar` (for
`evolution_strategy`, a value oracle `(candidates, key) -> f [m]`): they see function values
(or their signs, or the gradient for the first-order reference), where ZO-RankSGD only sees
rankings.

- `zo_sgd`: value-based ZO-SGD, `g = Σ_{q=1}^{m−1} (f(x + μu_q) − f(x))/μ · u_q`;
- `comparison_zo`: sign / comparison ZO, `g = Σ_{q=1}^{m−1} sign(f(x + μu_q) − f(x)) · u_q`;
- `evolution_strategy`: value-based ES, `g = Σ_i (f(x + μξ_i) − mean_j f(x + μξ_j)) ξ_i/(mμ)`;
- `gld`: gradient-less descent, `x ← argmin f` over `{x} ∪ {x + R_j u_j}`, `R_j = R·2^{−j}`;
- `normalized_gd`: first-order reference `x ← x − η ∇f/‖∇f‖`;
- `cma_es`: CMA-ES of the `cma` package, population m, σ₀ = μ (a host loop, not jitted).

`u_q` are uniform on the unit sphere (as in the authors' notebooks, TZW1998/rank_opt), ξ are
standard Gaussian. The value-based baselines query x itself plus m − 1 perturbed points.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from alignment.zo.estimator import check_m_mu, combine, perturb, sample_perturbations
from alignment.zo.optimizer import ZeroOrderOptimizer, descent_optimizer, optimizer_from_updates

PyTree = Any
Objective = Callable[[PyTree], jax.Array]


def _finite_difference_optimizer(
    transform: Callable[[jax.Array], jax.Array],
    *,
    learning_rate: float,
    m: int,
    mu: float,
    normalize_direction: bool,
    where: str,
) -> ZeroOrderOptimizer:
  """`g = Σ_{q=1}^{m−1} transform(f(x + μu_q) − f(x)) · u_q`, u_q on the unit sphere."""
  check_m_mu(m, mu, where)

  def direction(params, key, f: Objective):
    u = sample_perturbations(key, params, m - 1, perturbation="sphere")
    differences = jax.vmap(f)(perturb(params, u, mu)) - f(params)
    return combine(u, transform(differences)), {}

  return descent_optimizer(
      direction, learning_rate=learning_rate, normalize_direction=normalize_direction
  )


def zo_sgd(
    learning_rate: float = 1.0, *, m: int = 10, mu: float = 0.1, normalize_direction: bool = True
) -> ZeroOrderOptimizer:
  """Value-oracle ZO-SGD: `g = Σ_{q=1}^{m−1} (f(x + μu_q) − f(x))/μ · u_q`, `x ← x − η g/‖g‖`.

  The two-point (forward-difference) random gradient estimator of *Random Gradient-Free
  Minimization of Convex Functions* (Nesterov, Spokoiny; 2017), m − 1 directions + the centre.
  """
  return _finite_difference_optimizer(
      lambda diff: diff / mu, learning_rate=learning_rate, m=m, mu=mu,
      normalize_direction=normalize_direction, where="zo_sgd",
  )


def comparison_zo(
    learning_rate: float = 1.0, *, m: int = 10, mu: float = 0.1, normalize_direction: bool = True
) -> ZeroOrderOptimizer:
  """Comparison (sign) ZO: `g = Σ_{q=1}^{m−1} sign(f(x + μu_q) − f(x)) · u_q`.

  Uses only the comparison of each perturbed point with the centre (1 bit per query); the
  paper's comparison baseline is SCOBO (*A One-bit, Comparison-Based Gradient Estimator*,
  Cai, McKenzie, Yin, Zhang; 2022), whose 1-bit compressed-sensing decoder is not reproduced.
  """
  return _finite_difference_optimizer(
      jnp.sign, learning_rate=learning_rate, m=m, mu=mu,
      normalize_direction=normalize_direction, where="comparison_zo",
  )


def evolution_strategy(
    learning_rate: float = 1.0, *, m: int = 10, mu: float = 0.1, normalize_direction: bool = True
) -> ZeroOrderOptimizer:
  """Value-based ES: `g = (1/(mμ)) Σ_i (f(x + μξ_i) − f̄) ξ_i`, `f̄` the mean over the m queries.

  *Evolution Strategies as a Scalable Alternative to Reinforcement Learning* (Salimans et al.,
  2017) with the mean as baseline; ξ ~ N(0, I). Unlike the other baselines its oracle argument
  is a value oracle `values(candidates, key) -> f [m]`, so that noisy objectives work: policy
  search passes `oracles.negated_returns(return_fn)` (one episode per query), a deterministic
  f is passed as `lambda c, key: jax.vmap(f)(c)`.
  """
  check_m_mu(m, mu, "evolution_strategy")

  def direction(params, key, value_oracle):
    xi_key, oracle_key = jax.random.split(key)
    xi = sample_perturbations(xi_key, params, m, perturbation="gaussian")
    values = value_oracle(perturb(params, xi, mu), oracle_key)
    return combine(xi, (values - jnp.mean(values)) / (m * mu)), {}

  return descent_optimizer(
      direction, learning_rate=learning_rate, normalize_direction=normalize_direction
  )


def normalized_gd(learning_rate: float = 1.0) -> ZeroOrderOptimizer:
  """First-order reference: `x ← x − η ∇f(x)/‖∇f(x)‖` (the "oracle" argument is f)."""

  def direction(params, key, f: Objective):
    del key
    return jax.grad(f)(params), {}

  return descent_optimizer(direction, learning_rate=learning_rate, normalize_direction=True)


def gld(*, m: int = 10, max_radius: float = 0.4) -> ZeroOrderOptimizer:
  """Gradient-less descent: `x ← argmin f over {x} ∪ {x + R_j u_j}`, `R_j = R·2^{−j}`.

  *Gradientless Descent: High-Dimensional Zeroth-Order Optimization* (Golovin, Karro,
  Kochanski, Lee, Song, Zhang; ICLR 2020): one direction u_j uniform on the unit sphere per
  radius, `j = 0..m−1` (m queries; f(x) is known from the previous iteration). The step is
  accepted only if it lowers f, so f(x_t) never increases.
  """
  check_m_mu(m, max_radius, "gld")
  radii = max_radius * 0.5 ** jnp.arange(m, dtype=jnp.float32)

  def updates_fn(params, key, f: Objective):
    u = sample_perturbations(key, params, m, perturbation="sphere")
    steps = jax.tree_util.tree_map(
        lambda a: a * radii.reshape((m,) + (1,) * (a.ndim - 1)).astype(a.dtype), u
    )
    values = jax.vmap(f)(perturb(params, steps, 1.0))
    best = jnp.argmin(values)
    improve = values[best] < f(params)
    updates = jax.tree_util.tree_map(lambda a: jnp.where(improve, a[best], 0.0), steps)
    return updates, {"radius": jnp.where(improve, radii[best], 0.0)}

  return optimizer_from_updates(updates_fn)


def cma_es(
    f: Objective,
    x0: jax.Array,
    *,
    popsize: int = 10,
    sigma0: float = 0.1,
    iterations: int = 100,
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """CMA-ES (the installed `cma` package, not re-implemented): population m, σ₀ = μ.

  *The CMA Evolution Strategy: A Tutorial* (Hansen, 2016). Runs `iterations` ask/tell rounds
  (m = `popsize` queries each) from the mean `x0` `[d]`.

  Returns:
    `{"values": [iterations + 1] f at the distribution mean after each round (index 0: f(x0)),
      "x": the final mean [d]}`.
  """
  import cma  # pylint: disable=import-outside-toplevel  (only this baseline needs it)

  check_m_mu(popsize, sigma0, "cma_es")
  f_batch = jax.jit(jax.vmap(f))
  f_one = jax.jit(f)
  es = cma.CMAEvolutionStrategy(
      np.asarray(x0, np.float64), sigma0,
      {"popsize": popsize, "seed": seed + 1, "verbose": -9, "tolfun": 0, "tolx": 0,
       "tolfunhist": 0, "tolstagnation": 10 * iterations},
  )
  values = [float(f_one(jnp.asarray(x0, jnp.float32)))]
  for _ in range(iterations):
    population = np.asarray(es.ask())
    es.tell(list(population), np.asarray(f_batch(jnp.asarray(population, jnp.float32)),
                                          np.float64).tolist())
    values.append(float(f_one(jnp.asarray(es.mean, jnp.float32))))
  return {"values": np.asarray(values), "x": np.asarray(es.mean)}
