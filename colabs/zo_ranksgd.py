# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # ZO-RankSGD: optimising from rankings only
#
# *Zeroth-Order Optimization Meets Human Feedback: Provable Learning via Ranking Oracles*
# (Tang, Rybin, Chang; ICLR 2024). The optimiser never sees a function value: each iteration
# it shows m perturbed candidates `x + μ·ξ_i` to a ranking oracle, which returns the best k
# (best first); every (better, worse) pair of the ranking votes for the direction
# `ξ_worse − ξ_better`, and x takes a step along the normalised average.
#
# 1. Rosenbrock in 2-D with an exact oracle: trajectories on the contours for k = 1, 3, 10.
# 2. A session where **you** rank candidate colours (widgets), with an automatic oracle when
#    no person is there.

# %%
# Setup: install the library only when it is not importable (a fresh runtime with this
# repository cloned: run the notebook from the repository root or from its colabs/ folder).
import importlib.util
import os
import pathlib

if importlib.util.find_spec("alignment") is None:
  from IPython import get_ipython

  roots = [p for p in (pathlib.Path.cwd(), pathlib.Path.cwd().parent)
           if (p / "pyproject.toml").exists()]
  if not roots:
    raise RuntimeError("alignment is not installed: clone the repository and open this "
                       "notebook from it, or `pip install -e <repository>` first.")
  get_ipython().run_line_magic("pip", f"install -q -e {roots[0]}")

FAST = os.environ.get("ALIGNMENT_NOTEBOOK_FAST") == "1"  # set by tests/test_notebooks.py
# %matplotlib inline

# %%
import io

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
from matplotlib import patheffects
import numpy as np
import optax

from alignment import zo

# %% [markdown]
# ## 1. Rosenbrock with an exact ranking oracle
#
# `zo.zo_rank_sgd` is optax-style (`init`/`update`, the PRNG key in the state), so a
# cosine step-size decay and `lax.scan` over iterations need nothing else;
# `zo.exact_oracle(f, k)` ranks the m = 10 candidates by the true f and returns the
# best k.

# %%
ITERATIONS = 150 if FAST else 600
SEEDS = 4 if FAST else 16
x0 = jnp.array([-1.5, 2.0])


def run(k, seed, *, m=10, mu=0.05, lr=0.1):
  opt = zo.zo_rank_sgd(1.0, m=m, mu=mu)  # unit steps along g/‖g‖, scaled below
  oracle = zo.exact_oracle(zo.rosenbrock, k=k)
  schedule = optax.cosine_decay_schedule(lr, ITERATIONS, alpha=0.02)

  def body(carry, t):
    x, state = carry
    updates, state, _ = opt.update(x, state, oracle)
    x = optax.apply_updates(x, jax.tree_util.tree_map(lambda u: schedule(t) * u, updates))
    return (x, state), x

  init = (x0, opt.init(x0, jax.random.key(seed)))
  _, path = jax.lax.scan(body, init, jnp.arange(ITERATIONS))
  return jnp.concatenate([x0[None], path])


KS = (1, 3, 10)
paths = {k: jax.jit(jax.vmap(lambda s, k=k: run(k, s)))(jnp.arange(SEEDS)) for k in KS}
for k in KS:
  final = jax.vmap(zo.rosenbrock)(paths[k][:, -1])
  print(f"k = {k:2d}: median final f = {float(jnp.median(final)):.4f} "
        f"(start {float(zo.rosenbrock(x0)):.1f}; minimum 0 at (1, 1))")

# %%
grid = np.meshgrid(np.linspace(-2, 2, 300), np.linspace(-1, 3, 300))
fvals = np.asarray(jax.vmap(jax.vmap(zo.rosenbrock))(jnp.stack(grid, -1)))
fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
axes[0].contour(*grid, np.log10(fvals + 1e-3), levels=25, cmap="Greys", linewidths=0.6)
for k, colour in zip(KS, ("C0", "C1", "C3")):
  path = np.asarray(paths[k][0])
  axes[0].plot(path[:, 0], path[:, 1], ".-", color=colour, ms=2, lw=0.8,
               label=f"k = {k} of m = 10")
axes[0].plot(*x0, "ko", label="start")
axes[0].plot(1, 1, "k*", ms=14, label="minimum")
axes[0].set(title="ZO-RankSGD on Rosenbrock (seed 0)", xlabel="x₁", ylabel="x₂")
axes[0].legend()
for k, colour in zip(KS, ("C0", "C1", "C3")):
  f = np.asarray(jax.vmap(jax.vmap(zo.rosenbrock))(paths[k]))
  axes[1].plot(np.median(f, 0), color=colour, label=f"k = {k}")
  axes[1].fill_between(np.arange(f.shape[1]), *np.quantile(f, [0.25, 0.75], 0),
                       color=colour, alpha=0.2)
axes[1].set(yscale="log", xlabel="iteration", ylabel="f(x)",
            title=f"median and quartiles over {SEEDS} seeds")
axes[1].legend()
fig.tight_layout()

# %% [markdown]
# ## 2. You are the oracle: match a colour
#
# The parameters are an RGB colour; each round shows m = 6 candidate swatches and asks
# for the **3 closest to the target, best first**. Because `opt.step(x, key, oracle)`
# is a pure function, a round is two calls with the same key: the first only records
# the candidates (`propose`), the second applies the ranking the person gave
# (`answer`). Typed rankings are parsed and validated by `zo.human_oracle` (the same
# oracle that runs at a terminal).

# %%
M, K_BEST = 6, 3
TARGET = jnp.array([0.85, 0.45, 0.15])  # the colour to match
colour_opt = zo.zo_rank_sgd(0.08, m=M, mu=0.15)
distance = lambda rgb: jnp.sum(jnp.square(jnp.clip(rgb, 0.0, 1.0) - TARGET))


def propose(x, key):
  """The m candidates that `opt.step(x, key, ...)` will show its oracle."""
  seen = {}

  def record(candidates, _):
    seen["candidates"] = candidates
    return jnp.arange(K_BEST, dtype=jnp.int32)

  colour_opt.step(x, key, record)
  return np.asarray(seen["candidates"])


def answer(x, key, ranking):
  """The step with the given ranking of `propose(x, key)`: (x', next key)."""
  x, key, _ = colour_opt.step(x, key, lambda c, _: jnp.asarray(ranking, jnp.int32))
  return x, key


def draw_swatches(ax, colours, title):
  colours = np.clip(colours, 0, 1)
  ax.imshow(colours[None], aspect="auto")
  for i in range(len(colours)):
    ax.text(i, 0, str(i + 1), ha="center", va="center", fontsize=16, color="w",
            path_effects=[patheffects.withStroke(linewidth=2, foreground="k")])
  ax.set(title=title, xticks=[], yticks=[])


# %% [markdown]
# What a terminal session with `zo.human_oracle` looks like (the answers are typed
# here by a script that knows the target: a wrong first line, then the right one):

# %%
x, key = jnp.full((3,), 0.5), jax.random.key(0)
candidates = propose(x, key)
right = np.asarray(zo.exact_oracle(distance, k=K_BEST)(candidates, None)) + 1
typed = io.StringIO("2 2 7\n" + " ".join(map(str, right)) + "\n")
person = zo.human_oracle(k=K_BEST, input_stream=typed, shuffle=False)
ranking = person(candidates)
print("\nranking (0-based candidate ids):", ranking)

# %% [markdown]
# ### The automatic oracle
#
# With nobody at the keyboard, `zo.exact_oracle` ranks by the true distance; each
# row of the picture is the current colour after one more round.

# %%
ROUNDS = 15 if FAST else 60
auto = zo.exact_oracle(distance, k=K_BEST)
x, key = jnp.full((3,), 0.5), jax.random.key(1)
history = [np.asarray(x)]
for _ in range(ROUNDS):
  ranking = auto(propose(x, key), None)
  x, key = answer(x, key, ranking)
  history.append(np.asarray(x))
history = np.clip(np.stack(history), 0, 1)

fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), gridspec_kw={"width_ratios": [2, 1]})
strip = np.concatenate([history, np.broadcast_to(TARGET, (3, 3))])
axes[0].imshow(strip[None], aspect="auto")
axes[0].set(title="current colour after each round (last 3 = target)",
            yticks=[], xlabel="round")
axes[1].plot([float(distance(h)) for h in history])
axes[1].set(yscale="log", title="squared distance to the target", xlabel="round")
fig.tight_layout()
print(f"distance: {float(distance(history[0])):.3f} -> {float(distance(history[-1])):.4f}")

# %% [markdown]
# ### Your turn (needs `ipywidgets`)
#
# Type the numbers of the 3 swatches closest to the target, best first (e.g. `4 1 6`),
# and press *Submit*. Without `ipywidgets`, or when the notebook runs headless
# (`FAST`), the session is skipped with a note: the automatic oracle above played it.

# %%
try:
  import ipywidgets as widgets
except ImportError:
  widgets = None

if widgets is None or FAST:
  why = "ipywidgets is not installed" if widgets is None else "running headless (FAST)"
  print(f"Interactive session skipped: {why}. The automatic oracle above stands in for "
        "the person; `pip install ipywidgets` and run this cell to rank yourself.")
else:
  from IPython.display import display

  session = {"x": jnp.full((3,), 0.5), "key": jax.random.key(2), "round": 0}
  out = widgets.Output()
  box = widgets.Text(placeholder=f"best {K_BEST} ids, best first, e.g. 4 1 6")
  button = widgets.Button(description="Submit")

  def show():
    session["candidates"] = propose(session["x"], session["key"])
    with out:
      out.clear_output(wait=True)
      fig, axes = plt.subplots(1, 2, figsize=(10, 1.8),
                               gridspec_kw={"width_ratios": [1, M]})
      draw_swatches(axes[0], np.asarray(TARGET)[None], "target")
      draw_swatches(axes[1], session["candidates"],
                    f"round {session['round']}: candidates")
      plt.show()

  def submit(_):
    messages = io.StringIO()
    oracle = zo.human_oracle(k=K_BEST, input_stream=io.StringIO(box.value + "\n"),
                             output_stream=messages, shuffle=False)
    try:
      ranking = oracle(session["candidates"])
    except EOFError:  # the typed ranking was invalid: show why, keep the round
      with out:
        print(*[l for l in messages.getvalue().splitlines() if l.startswith("Invalid")])
      return
    session["x"], session["key"] = answer(session["x"], session["key"], ranking)
    session["round"] += 1
    box.value = ""
    show()

  button.on_click(submit)
  display(widgets.HBox([box, button]), out)
  show()
