"""Generates the notebooks of `colabs/` (outputs stripped) from the cell sources below.

    python colabs/make_notebooks.py           # rewrite every colabs/*.ipynb
    python colabs/make_notebooks.py --check   # exit 1 if a stored notebook differs

The notebooks are kept as code here so that they are reviewable and regenerable; edit this file,
never the `.ipynb` files. Every notebook starts with the same setup cell: it installs the library
only when it is not importable, and reads `ALIGNMENT_NOTEBOOK_FAST=1` (set by
`tests/test_notebooks.py`) into `FAST`, which shrinks every loop.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))

SETUP = '''\
# Setup: install the library only when it is not importable (a fresh runtime with this
# repository cloned: run the notebook from the repository root or from its colabs/ folder).
import importlib.util
import os
import pathlib

if importlib.util.find_spec("alignment") is None:
  roots = [p for p in (pathlib.Path.cwd(), pathlib.Path.cwd().parent)
           if (p / "pyproject.toml").exists()]
  if not roots:
    raise RuntimeError("alignment is not installed: clone the repository and open this "
                       "notebook from it, or `pip install -e <repository>` first.")
  get_ipython().run_line_magic("pip", f"install -q -e {roots[0]}")

FAST = os.environ.get("ALIGNMENT_NOTEBOOK_FAST") == "1"  # set by tests/test_notebooks.py
%matplotlib inline
'''


def _md(text: str):
  return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def _code(text: str):
  return nbformat.v4.new_code_cell(textwrap.dedent(text).strip())


def _notebook(title_markdown: str, cells: list) -> nbformat.NotebookNode:
  nb = nbformat.v4.new_notebook()
  nb.metadata = {
      "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
      "language_info": {"name": "python"},
  }
  nb.cells = [_md(title_markdown), _code(SETUP), *cells]
  for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives identical files
    cell["id"] = f"cell-{i}"
  return nb


# ------------------------------------------------------------------------------------------
# 1. objectives_tour.ipynb


def objectives_tour() -> nbformat.NotebookNode:
  return _notebook(
      """
      # A tour of the preference objectives

      Every objective in `alignment.losses` is a pure function over `[..., K]` arrays: summed
      completion log-probs of K responses to one prompt (`logps`), the same under the frozen
      reference (`ref_logps`), and graded `labels` (higher is better). This notebook

      1. evaluates **every registered objective** on toy arrays (with `jit` and `grad`),
      2. plots loss and gradient against the preference margin for the **DPO family**,
      3. shows the **K = 2 reductions**: on a single pair, the listwise LiPO objectives become DPO
         (or SLiC's hinge), exactly.
      """,
      [
          _code("""
              import inspect

              import jax
              import jax.numpy as jnp
              import matplotlib.pyplot as plt
              import numpy as np

              from alignment import losses

              for family in sorted({losses.spec(n).family for n in losses.names()}):
                print(f"{family:>15}: {', '.join(losses.names(family=family))}")
          """),
          _md("""
              ## 1. Every objective on toy arrays

              `losses.spec(name)` says what an objective needs (a reference, completion lengths,
              extra inputs such as KTO's `kl_logps`, state). `alignment.losses.examples` builds toy
              inputs from the spec alone: B = 3 lists of K = 2 responses (K = 4 for listwise
              objectives), chosen first, labels `linspace(1, 0, K)`.
          """),
          _code("""
              from alignment.losses.examples import REQUIRED_HYPER_PARAMETERS, example_inputs


              def toy_inputs(name, seed=0):
                \"\"\"(logps, ref_logps, labels), keyword inputs for `losses.get(name)`.

                `labels` is the third positional input: graded labels, or the rewards, advantages
                or win probabilities of the group objectives (all in [0, 1] here).
                \"\"\"
                return example_inputs(name, seed=seed, scale=15.0)


              def loss_and_grad(name):
                \"\"\"The loss and d loss / d logps (eager: compiling 60+ tiny functions costs more).\"\"\"
                spec = losses.spec(name)
                (logps, ref_logps, labels), kwargs = toy_inputs(name)
                static = {n: kwargs.pop(n) for n in list(kwargs) if n in REQUIRED_HYPER_PARAMETERS}

                def f(lp, arrays):
                  out = spec.fn(lp, ref_logps, labels, **arrays, **static)
                  return out[0] if spec.stateful else out

                return jax.value_and_grad(f)(logps, kwargs)


              results = {name: loss_and_grad(name) for name in losses.names()}
              for name, (value, grad) in results.items():
                assert np.isfinite(value) and np.all(np.isfinite(grad)), name
              print(f"{len(results)} objectives evaluated; all values and gradients finite.")
          """),
          _code("""
              names = losses.names()
              families = sorted({losses.spec(n).family for n in names})
              colours = dict(zip(families, plt.cm.tab10.colors))
              c = [colours[losses.spec(n).family] for n in names]
              fig, axes = plt.subplots(1, 2, figsize=(13, 0.2 * len(names) + 1.5), sharey=True)
              axes[0].barh(names, [float(results[n][0]) for n in names], color=c)
              axes[0].set(title="loss on the toy inputs", xscale="symlog")
              axes[1].barh(names, [float(jnp.linalg.norm(results[n][1])) for n in names], color=c)
              axes[1].set(title="‖∂ loss / ∂ logps‖", xscale="symlog")
              axes[0].invert_yaxis()
              handles = [plt.Rectangle((0, 0), 1, 1, color=colours[f]) for f in families]
              axes[1].legend(handles, families, loc="lower right")
              fig.tight_layout()
          """),
          _md("""
              ## 2. The DPO family against the margin

              For one pair, put the rejected response at the reference (`ρ_l = 0`) and move the
              chosen log-ratio `ρ_w = h`: the DPO margin is then `h = ρ_w − ρ_l`. Each panel
              shows the loss (solid) and its slope `∂ℓ/∂ lp_w` (dashed) with each objective's
              default hyper-parameters. DPO's slope `−β σ(−βh)` never vanishes; IPO is a
              parabola with its minimum at `h = 1/(2β)`; the hinge stops at `βh = 1`; APO-down
              pushes the chosen response down when the pair is already well separated; objectives
              that look at each log-ratio separately (APO, BCO, NCA, SPPO) are not functions of
              `h` alone, so these are slices with `ρ_l = 0`.
          """),
          _code("""
              DPO_FAMILY = [n for n in losses.names(family="pairwise")
                            if losses.spec(n).needs_reference and not losses.spec(n).needs_lengths
                            and not losses.spec(n).extra_inputs]
              margins = jnp.linspace(-40.0, 40.0, 81 if FAST else 401)


              def pair_loss(name, lp_w, lp_l):
                spec = losses.spec(name)
                logps = jnp.stack([lp_w, lp_l])[None, :]  # [B = 1, K = 2]: chosen, rejected
                state = {"state": spec.init_state()} if spec.stateful else {}
                out = spec.fn(logps, jnp.zeros_like(logps), jnp.array([[1.0, 0.0]]), **state)
                return out[0] if spec.stateful else out


              def margin_curve(name):
                return jax.vmap(jax.value_and_grad(lambda h: pair_loss(name, h, 0.0)))(margins)


              cols = 4
              rows = -(-len(DPO_FAMILY) // cols)
              fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
              for ax, name in zip(axes.flat, DPO_FAMILY):
                value, slope = margin_curve(name)
                ax.plot(margins, value, "C0", label="loss")
                ax.axhline(0.0, color="0.8", lw=0.8)
                ax.axvline(0.0, color="0.8", lw=0.8)
                twin = ax.twinx()
                twin.plot(margins, slope, "C3--", label="∂ℓ/∂lp_w")
                ax.set_title(name)
                ax.set_xlabel("margin h = ρ_w − ρ_l")
              for ax in axes.flat[len(DPO_FAMILY):]:
                ax.axis("off")
              fig.legend(*[sum(x, []) for x in zip(axes.flat[0].get_legend_handles_labels(),
                                                   twin.get_legend_handles_labels())],
                         loc="upper right")
              fig.tight_layout()
          """),
          _md("""
              ## 3. K = 2 reductions

              With K = 2, labels `[1, 0]` and scores `s = β·ρ`, the LiPO objectives on a single
              pair are DPO (`−log σ(βh)`) exactly: the pairwise logistic loss, ListMLE and the
              softmax loss coincide with it, LiPO-λ is DPO times the constant lambda weight
              `|2¹ − 2⁰|·|1/ln 2 − 1/ln 3| ≈ 0.5325` (ALGORITHMS.md §0.3), and the pairwise hinge
              is SLiC's `max(0, 1 − βh)`. The cell checks this numerically and plots it.
          """),
          _code("""
              beta = 0.1
              LAMBDA = 1.0 / np.log(2.0) - 1.0 / np.log(3.0)  # |2^1 − 2^0| · |1/ln 2 − 1/ln 3|
              logps = jnp.stack([margins, jnp.zeros_like(margins)], axis=-1)  # [N, 2]: ρ_w = h, ρ_l = 0
              ref, labels = jnp.zeros_like(logps), jnp.broadcast_to(jnp.array([1.0, 0.0]), logps.shape)
              unreduced = lambda name: losses.get(name)(logps, ref, labels, beta=beta, reduce_fn=None)
              per_list = lambda x: x.reshape(x.shape[0], -1).sum(-1)  # listwise: per item or pair

              dpo, hinge = unreduced("dpo"), unreduced("hinge")
              reductions = {  # name: (curve, the DPO-family curve it must equal)
                  "lipo_pair_logistic": (per_list(unreduced("lipo_pair_logistic")), dpo),
                  "lipo_listmle": (per_list(unreduced("lipo_listmle")), dpo),
                  "lipo_softmax": (per_list(unreduced("lipo_softmax")), dpo),
                  "lipo_lambda / 0.5325": (per_list(unreduced("lipo_lambda")) / LAMBDA, dpo),
                  "lipo_pair_hinge": (per_list(unreduced("lipo_pair_hinge")), hinge),
              }
              for name, (curve, target) in reductions.items():
                np.testing.assert_allclose(curve, target, rtol=1e-5, atol=1e-6, err_msg=name)
              print("every K = 2 reduction holds to float32 precision")

              fig, axes = plt.subplots(1, 2, figsize=(13, 4))
              axes[0].plot(margins, dpo, "k", lw=5, alpha=0.25, label="dpo")
              axes[0].plot(margins, hinge, "0.5", lw=5, alpha=0.25, label="hinge (SLiC)")
              for name, (curve, _) in reductions.items():
                axes[0].plot(margins, curve, lw=1.2, label=name)
              axes[0].set(xlabel="margin h", ylabel="loss", title=f"K = 2, β = {beta}")
              axes[0].legend()
              raw_lambda = per_list(unreduced("lipo_lambda"))
              axes[1].plot(margins, raw_lambda / dpo, label="lipo_lambda / dpo")
              axes[1].axhline(LAMBDA, color="k", ls=":", label=f"{LAMBDA:.4f}")
              axes[1].set(xlabel="margin h", ylabel="ratio", ylim=(0, 1),
                          title="LiPO-λ is a constant multiple of DPO at K = 2")
              axes[1].legend()
              fig.tight_layout()
          """),
      ],
  )


# ------------------------------------------------------------------------------------------
# 2. listwise_lipo.ipynb


def listwise_lipo() -> nbformat.NotebookNode:
  return _notebook(
      """
      # Listwise preference optimisation: LiPO-λ

      *LiPO: Listwise Preference Optimization through Learning-to-Rank* (Liu, Qin et al., 2024)
      treats alignment on a ranked list of K responses as learning-to-rank with the implicit
      reward `s_i = β·(lp_i − lr_i)` as the score. LiPO-λ weighs every pair `ψ_i > ψ_j` by how
      much swapping the two would change the list's DCG under the **current** ranking:
      `Δ_ij = |2^ψ_i − 2^ψ_j| · |1/ln(1 + τ_i) − 1/ln(1 + τ_j)|`.

      This notebook draws the lambda weights of one list as heat maps, then trains free scores on
      a batch of lists with LiPO-λ and with DPO on the same lists.
      """,
      [
          _code("""
              import jax
              import jax.numpy as jnp
              import matplotlib.pyplot as plt
              import numpy as np
              import optax

              from alignment import losses, metrics
              from alignment.losses import lambdaweights
          """),
          _md("""
              ## 1. One ranked list

              Six responses with graded labels ψ (5 = best) and the policy's current implicit
              rewards s, which rank them differently.
          """),
          _code("""
              labels = jnp.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
              scores = jnp.array([0.3, 1.2, -0.4, 0.9, 0.0, -1.0])  # current s = β·(lp − lr)
              K = labels.shape[-1]
              current_rank = 1 + jnp.argsort(jnp.argsort(-scores, stable=True))  # τ, 1 = top

              fig, ax = plt.subplots(figsize=(8, 3.2))
              x = np.arange(K)
              ax.bar(x - 0.2, labels / labels.max(), 0.4, label="label ψ (scaled to [0, 1])")
              ax.bar(x + 0.2, scores, 0.4, label="current score s")
              for i in range(K):
                ax.annotate(f"τ={int(current_rank[i])}", (i + 0.2, max(float(scores[i]), 0) + 0.05),
                            ha="center", fontsize=9)
              ax.set_xticks(x, [f"response {i}" for i in range(K)])
              ax.axhline(0, color="k", lw=0.6)
              ax.legend()
              ax.set_title("labels and current scores (τ: rank by score)")
              fig.tight_layout()
          """),
          _md("""
              ## 2. Lambda weights as heat maps

              Row i, column j is the weight of the pair (i better than j); the lower triangle is
              zero because only `ψ_i > ψ_j` forms a pair. LiPO-λ's weights depend on the current
              ranking: pairs that involve the top of the current ranking weigh most. Rax's DCG
              lambda weights are the same pattern scaled by `K·ln 2` (checked below); the
              label-difference weights ignore the ranking.
          """),
          _code("""
              perfect = labels / 10.0  # scores that already rank the list correctly
              panels = {
                  "LiPO-λ Δ, current scores": lambdaweights.lipo_lambdaweight(scores, labels),
                  "LiPO-λ Δ, perfectly ranked scores": lambdaweights.lipo_lambdaweight(perfect, labels),
                  "label difference |ψ_i − ψ_j|": lambdaweights.labeldiff_lambdaweight(scores, labels),
                  "LambdaLoss NDCG-Loss2 (dcg2)": lambdaweights.dcg2_lambdaweight(scores, labels),
              }
              np.testing.assert_allclose(
                  lambdaweights.lipo_lambdaweight(scores, labels, rax_scaled=True),
                  K * np.log(2.0) * panels["LiPO-λ Δ, current scores"], rtol=1e-5)

              fig, axes = plt.subplots(1, 4, figsize=(19, 4.4))
              for ax, (title, w) in zip(axes, panels.items()):
                w = np.asarray(w)
                im = ax.imshow(w, cmap="viridis")
                for i in range(K):
                  for j in range(K):
                    if w[i, j] > 0:
                      ax.text(j, i, f"{w[i, j]:.2g}", ha="center", va="center", fontsize=7,
                              color="w" if w[i, j] < 0.6 * w.max() else "k")
                ax.set(title=title, xlabel="j (worse)", ylabel="i (better)")
                fig.colorbar(im, ax=ax, fraction=0.046)
              fig.tight_layout()
          """),
          _md("""
              ## 3. LiPO-λ against DPO on the same lists

              A batch of lists of K = 8 responses with graded labels (a random permutation of
              0..7). The policy's log-probs are free parameters (reference log-probs 0), trained
              by gradient descent under three objectives, each with the step size that makes its
              first step of length 1 (`η = 1/‖∇L(θ₀)‖`: the objectives' scales differ, their
              directions are what we compare):

              - **LiPO-λ** on the whole list,
              - **DPO on all pairs** of the list (LiPO's DPO_BT, `lipo_pair_logistic`),
              - **DPO on the best-vs-worst pair** (what a pairwise dataset built from the list keeps).

              We track NDCG and Kendall τ between the scores and the labels.
          """),
          _code("""
              NUM_LISTS, K8, BETA = 64, 8, 0.1
              STEPS = 60 if FAST else 200
              rng = np.random.default_rng(0)
              list_labels = jnp.asarray(np.stack([rng.permutation(K8) for _ in range(NUM_LISTS)]),
                                        jnp.float32)
              init_logps = jnp.asarray(rng.normal(0.0, 1.0, (NUM_LISTS, K8)), jnp.float32)
              ref = jnp.zeros_like(init_logps)
              best = jnp.argmax(list_labels, -1)
              worst = jnp.argmin(list_labels, -1)


              def dpo_best_vs_worst(logps):
                take = lambda x, i: jnp.take_along_axis(x, i[:, None], -1)[:, 0]
                pair, pair_labels = losses.pairwise.pair_to_list(take(logps, best), take(logps, worst))
                return losses.get("dpo")(pair, jnp.zeros_like(pair), pair_labels, beta=BETA)


              OBJECTIVES = {
                  "LiPO-λ (whole list)":
                      lambda lp: losses.get("lipo_lambda")(lp, ref, list_labels, beta=BETA),
                  "DPO, all pairs":
                      lambda lp: losses.get("lipo_pair_logistic")(lp, ref, list_labels, beta=BETA),
                  "DPO, best vs worst": dpo_best_vs_worst,
              }


              def train(loss_fn):
                opt = optax.sgd(1.0 / optax.global_norm(jax.grad(loss_fn)(init_logps)))

                def step(carry, _):
                  lp, state = carry
                  updates, state = opt.update(jax.grad(loss_fn)(lp), state)
                  lp = optax.apply_updates(lp, updates)
                  s = BETA * (lp - ref)
                  return (lp, state), (metrics.mean(metrics.ndcg(s, list_labels)),
                                       metrics.mean(metrics.kendall_tau(s, list_labels)["tau"]))

                (lp, _), curves = jax.jit(lambda lp: jax.lax.scan(
                    step, (lp, opt.init(lp)), None, length=STEPS))(init_logps)
                return lp, curves


              runs = {name: train(fn) for name, fn in OBJECTIVES.items()}
              for name, (_, (ndcg, tau)) in runs.items():
                print(f"{name:>22}: NDCG {float(ndcg[-1]):.3f}, Kendall τ {float(tau[-1]):.3f}")
          """),
          _code("""
              fig, axes = plt.subplots(1, 3, figsize=(17, 4.2))
              for name, (lp, (ndcg, tau)) in runs.items():
                axes[0].plot(ndcg, label=name)
                axes[1].plot(tau, label=name)
                s = np.asarray(BETA * (lp - ref))
                by_grade = [s[np.asarray(list_labels) == g].mean() for g in range(K8)]
                axes[2].plot(range(K8), by_grade, "o-", label=name)
              axes[0].set(title="NDCG of the implicit rewards", xlabel="step")
              axes[1].set(title="Kendall τ with the labels", xlabel="step")
              axes[2].set(title="final mean implicit reward by label", xlabel="label ψ (7 = best)",
                          ylabel="s = β·ρ")
              for ax in axes:
                ax.legend()
              fig.tight_layout()
          """),
          _md("""
              What to look for: DPO on the best-vs-worst pair only separates the two extremes; the
              middle of each list stays where it started, so its Kendall τ plateaus. DPO on all
              pairs treats every pair alike and orders the whole list. LiPO-λ spends its gradient
              on the pairs that change the top of the ranking: its NDCG rises first, while the
              order at the bottom (Kendall τ) comes later.
          """),
      ],
  )


# ------------------------------------------------------------------------------------------
# 3. train_tiny_policy.ipynb


def train_tiny_policy() -> nbformat.NotebookNode:
  return _notebook(
      """
      # Training a tiny policy, step by step

      The main job (`python -m experiments.demo`) chains four binaries; each body is an importable
      `run(config, workdir)`, so this notebook runs exactly the same code one stage at a time:

      1. **SFT** of a tiny decoder on the `sorting` task's mixed-quality demonstrations,
      2. **preferences**: sample K = 4 responses per prompt, rank them with a simulated
         Plackett–Luce rater,
      3. **preference training** with LiPO-λ against the SFT reference,
      4. **evaluation** on held-out prompts under the task's true reward.

      `FAST` shrinks every stage to seconds (the model learns little then); the full default
      config takes a few minutes on a CPU runtime.
      """,
      [
          _code("""
              import tempfile

              import jax
              import matplotlib.pyplot as plt
              import numpy as np

              from alignment.training import generation, logs, runs
              from experiments import evaluate, make_preferences, sft, train
              from experiments.configs import demo as demo_config

              config = demo_config.get_config()
              if FAST:
                c = config
                c.sft.num_demonstrations, c.sft.batch_size, c.sft.num_steps = 256, 16, 30
                c.sft.optimizer, c.sft.log_every = demo_config.optimizer(3e-3, 30, 3), 5
                c.preferences.num_prompts, c.preferences.batch_size = 32, 32
                c.train.batch_size, c.train.num_steps, c.train.log_every = 8, 20, 5
                c.train.optimizer, c.train.checkpoint_every = demo_config.optimizer(1e-3, 20, 2), 20
                c.evaluate.num_prompts, c.evaluate.batch_size = 32, 32
                c.evaluate.heldout_preferences = 16
              workdir = tempfile.mkdtemp(prefix="tiny_policy_")
              print("workdir:", workdir)
              print(config.loss, config.model, sep="\\n")
          """),
          _md("""
              ## The task

              Prompts ask to sort digits; the true reward is known (a weighted sum of attributes
              such as correctness), and the demonstrations are of mixed quality.
          """),
          _code("""
              task, model_config = runs.task_and_model(config)
              demos = task.demonstrations(config.sft.num_demonstrations, seed=config.seed)
              for prompt, response in demos[:4]:
                print(f"{prompt!r:>28} -> {response!r:<16} optimum {task.optimum(prompt)!r:<14} "
                      f"reward {task.reward(prompt, response):.2f}")
              demo_rewards = task.reward_batch([p for p, _ in demos], [r for _, r in demos])
              plt.figure(figsize=(6, 3))
              plt.hist(demo_rewards, bins=30)
              plt.title("true reward of the SFT demonstrations")
              plt.xlabel("reward");
          """),
          _md("## Stage 1: supervised fine-tuning"),
          _code("""
              sft_dir = f"{workdir}/sft"
              sft_params = sft.run(config, sft_dir)
              rows = logs.read_metrics(sft_dir)
              plt.figure(figsize=(6, 3))
              plt.plot([r["step"] for r in rows], [r["loss"] for r in rows])
              plt.title("SFT: token NLL")
              plt.xlabel("step");
          """),
          _md("## Stage 2: preference lists from the SFT policy, ranked by a simulated rater"),
          _code("""
              pref_dir = f"{workdir}/preferences"
              records = make_preferences.run(config, pref_dir, policy=sft_dir)
              record = records[0]
              print("prompt:", repr(record["prompt"]))
              order = np.argsort(record["scores"])[::-1]
              fig, ax = plt.subplots(figsize=(7, 2.8))
              ax.barh([repr(record["responses"][i]) for i in order],
                      [record["rewards"][i] for i in order], color="C2")
              ax.invert_yaxis()
              ax.set(title="one list, best-ranked first (bars: true reward)", xlabel="true reward")
              fig.tight_layout()
          """),
          _md("## Stage 3: LiPO-λ training against the SFT reference"),
          _code("""
              train_dir = f"{workdir}/train"
              policy_params = train.run(config, train_dir, init=sft_dir,
                                        data=f"{pref_dir}/{make_preferences.DATA_FILE}")
              rows = logs.read_metrics(train_dir)
              steps = [r["step"] for r in rows]
              fig, axes = plt.subplots(1, 3, figsize=(15, 3.5))
              axes[0].plot(steps, [r["loss"] for r in rows])
              axes[0].set(title=f"{config.loss.name} loss", xlabel="step")
              for ax, key in zip(axes[1:], ("rewards/accuracies", "rewards/margins")):
                ax.plot(steps, [r[key] for r in rows], color="C1")
                ax.set(title=f"implicit {key}", xlabel="step")
              fig.tight_layout()
          """),
          _md("""
              ## Stage 4: evaluation, and samples before and after

              `evaluate.run` reports the win rate of the aligned policy's samples against the SFT
              policy's under the true reward (ties count half) with a 95% interval. Below it, the
              reward distributions of fresh samples from both policies on held-out prompts.
          """),
          _code("""
              summary = evaluate.run(config, f"{workdir}/eval", policy=train_dir, reference=sft_dir)
              prompts = task.prompts("heldout", 64 if FAST else 256, seed=config.seed + 1)


              def sample(params, seed):
                texts, _ = generation.sample_responses(
                    model_config, params, task.tokenizer, prompts, jax.random.key(seed),
                    num_samples=1, max_prompt_length=task.max_prompt_length + 1,
                    max_new_tokens=task.max_response_length + 1, batch_size=256)
                texts = [t[0] for t in texts]
                return texts, task.reward_batch(prompts, texts)


              before, before_rewards = sample(sft_params, 1)
              after, after_rewards = sample(policy_params, 2)
              fig, axes = plt.subplots(1, 2, figsize=(14, 3.8))
              bins = np.linspace(min(before_rewards.min(), after_rewards.min()),
                                 max(before_rewards.max(), after_rewards.max()), 25)
              axes[0].hist(before_rewards, bins, alpha=0.6, label="SFT (before)")
              axes[0].hist(after_rewards, bins, alpha=0.6, label="aligned (after)")
              axes[0].set(title="true reward of held-out samples", xlabel="reward")
              axes[0].legend()
              attrs = list(summary["attributes"]["policy"])
              x = np.arange(len(attrs))
              axes[1].bar(x - 0.2, [summary["attributes"]["reference"][a] for a in attrs], 0.4,
                          label="SFT (before)")
              axes[1].bar(x + 0.2, [summary["attributes"]["policy"][a] for a in attrs], 0.4,
                          label="aligned (after)")
              axes[1].set_xticks(x, attrs)
              lo, hi = summary["win_rate_ci95"]
              axes[1].set_title(f"win rate {summary['win_rate']:.2f} (95% CI {lo:.2f}–{hi:.2f})")
              axes[1].legend()
              fig.tight_layout()

              print(f"{'prompt':>26} | {'optimum':<12} | {'SFT (before)':<14} | aligned (after)")
              for p, b, a in list(zip(prompts, before, after))[:8]:
                print(f"{p!r:>26} | {task.optimum(p)!r:<12} | {b!r:<14} | {a!r}")
          """),
      ],
  )


# ------------------------------------------------------------------------------------------
# 4. zo_ranksgd.ipynb


def zo_ranksgd() -> nbformat.NotebookNode:
  return _notebook(
      """
      # ZO-RankSGD: optimising from rankings only

      *Zeroth-Order Optimization Meets Human Feedback: Provable Learning via Ranking Oracles*
      (Tang, Rybin, Chang; ICLR 2024). The optimiser never sees a function value: each iteration
      it shows m perturbed candidates `x + μ·ξ_i` to a ranking oracle, which returns the best k
      (best first); every (better, worse) pair of the ranking votes for the direction
      `ξ_worse − ξ_better`, and x takes a step along the normalised average.

      1. Rosenbrock in 2-D with an exact oracle: trajectories on the contours for k = 1, 3, 10.
      2. A session where **you** rank candidate colours (widgets), with an automatic oracle when
         no person is there.
      """,
      [
          _code("""
              import io

              import jax
              import jax.numpy as jnp
              import matplotlib.pyplot as plt
              from matplotlib import patheffects
              import numpy as np
              import optax

              from alignment import zo
          """),
          _md("""
              ## 1. Rosenbrock with an exact ranking oracle

              `zo.zo_rank_sgd` is optax-style (`init`/`update`, the PRNG key in the state), so a
              cosine step-size decay and `lax.scan` over iterations need nothing else;
              `zo.exact_oracle(f, k)` ranks the m = 10 candidates by the true f and returns the
              best k.
          """),
          _code("""
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
          """),
          _code("""
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
          """),
          _md("""
              ## 2. You are the oracle: match a colour

              The parameters are an RGB colour; each round shows m = 6 candidate swatches and asks
              for the **3 closest to the target, best first**. Because `opt.step(x, key, oracle)`
              is a pure function, a round is two calls with the same key: the first only records
              the candidates (`propose`), the second applies the ranking the person gave
              (`answer`). Typed rankings are parsed and validated by `zo.human_oracle` (the same
              oracle that runs at a terminal).
          """),
          _code("""
              M, K_BEST = 6, 3
              TARGET = jnp.array([0.85, 0.45, 0.15])  # the colour to match
              colour_opt = zo.zo_rank_sgd(0.08, m=M, mu=0.15)
              distance = lambda rgb: jnp.sum(jnp.square(jnp.clip(rgb, 0.0, 1.0) - TARGET))


              def propose(x, key):
                \"\"\"The m candidates that `opt.step(x, key, ...)` will show its oracle.\"\"\"
                seen = {}

                def record(candidates, _):
                  seen["candidates"] = candidates
                  return jnp.arange(K_BEST, dtype=jnp.int32)

                colour_opt.step(x, key, record)
                return np.asarray(seen["candidates"])


              def answer(x, key, ranking):
                \"\"\"The step with the given ranking of `propose(x, key)`: (x', next key).\"\"\"
                x, key, _ = colour_opt.step(x, key, lambda c, _: jnp.asarray(ranking, jnp.int32))
                return x, key


              def draw_swatches(ax, colours, title):
                colours = np.clip(colours, 0, 1)
                ax.imshow(colours[None], aspect="auto")
                for i in range(len(colours)):
                  ax.text(i, 0, str(i + 1), ha="center", va="center", fontsize=16, color="w",
                          path_effects=[patheffects.withStroke(linewidth=2, foreground="k")])
                ax.set(title=title, xticks=[], yticks=[])
          """),
          _md("""
              What a terminal session with `zo.human_oracle` looks like (the answers are typed
              here by a script that knows the target: a wrong first line, then the right one):
          """),
          _code("""
              x, key = jnp.full((3,), 0.5), jax.random.key(0)
              candidates = propose(x, key)
              right = np.asarray(zo.exact_oracle(distance, k=K_BEST)(candidates, None)) + 1
              typed = io.StringIO("2 2 7\\n" + " ".join(map(str, right)) + "\\n")
              person = zo.human_oracle(k=K_BEST, input_stream=typed, shuffle=False)
              ranking = person(candidates)
              print("\\nranking (0-based candidate ids):", ranking)
          """),
          _md("""
              ### The automatic oracle

              With nobody at the keyboard, `zo.exact_oracle` ranks by the true distance; each
              row of the picture is the current colour after one more round.
          """),
          _code("""
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
          """),
          _md("""
              ### Your turn (needs `ipywidgets`)

              Type the numbers of the 3 swatches closest to the target, best first (e.g. `4 1 6`),
              and press *Submit*. Without `ipywidgets`, or when the notebook runs headless
              (`FAST`), the session is skipped with a note: the automatic oracle above played it.
          """),
          _code("""
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
                  oracle = zo.human_oracle(k=K_BEST, input_stream=io.StringIO(box.value + "\\n"),
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
          """),
      ],
  )


# ------------------------------------------------------------------------------------------
# 5. reward_transforms.ipynb


def reward_transforms() -> nbformat.NotebookNode:
  return _notebook(
      """
      # Transforming and combining rewards

      *Transforming and Combining Rewards for Aligning Large Language Models* (Wang, Nagpal,
      Berant, Eisenstein, D'Amour, Koyejo, Veitch; ICML 2024). Under Bradley–Terry, the
      probability that a response beats a per-prompt reference is `σ(r − r_ref(x))`; the
      **LSC transform** uses its log, `u = logσ(r − r_ref(x))`, as the RL reward. Summing the
      transformed rewards of several properties is the log-probability of being good on all of
      them (a logical AND), unlike the raw sum, which lets one property buy off another.

      This notebook draws the transform, the two estimators of `r_ref`, and what the combination
      of two rewards prefers (`alignment.rewards`: `lsc`, `r_ref_quantile`, `r_ref_normal`,
      `combine_rewards`).
      """,
      [
          _code("""
              import jax
              import jax.numpy as jnp
              import matplotlib.pyplot as plt
              import numpy as np

              from alignment import rewards
          """),
          _md("""
              ## 1. The LSC transform

              Linear (`≈ r − r_ref`) far below the reference, saturating towards 0 above it: the
              marginal value of more reward, `∂u/∂r = σ(r_ref − r)`, is largest where the response
              is bad and vanishes where it is already good, so over-optimising a reward model
              far past the reference pays little.
          """),
          _code("""
              r = jnp.linspace(-6.0, 6.0, 241)
              fig, axes = plt.subplots(1, 2, figsize=(13, 4))
              for r_ref in (-2.0, 0.0, 2.0):
                u = rewards.lsc(r, jnp.asarray(r_ref))
                slope = jax.vmap(jax.grad(lambda x: rewards.lsc(x, jnp.asarray(r_ref))))(r)
                np.testing.assert_allclose(slope, jax.nn.sigmoid(r_ref - r), rtol=1e-5, atol=1e-7)
                axes[0].plot(r, u, label=f"r_ref = {r_ref:g}")
                axes[1].plot(r, slope, label=f"r_ref = {r_ref:g}")
              axes[0].plot(r, r, "k:", lw=0.8, label="raw reward r")
              axes[0].set(ylim=(-8, 1), xlabel="reward r", ylabel="u = logσ(r − r_ref)",
                          title="LSC transform")
              axes[1].set(xlabel="reward r", ylabel="∂u/∂r = σ(r_ref − r)",
                          title="marginal value of more reward")
              for ax in axes:
                ax.legend()
              fig.tight_layout()
          """),
          _md("""
              ## 2. Estimating `r_ref(x)`

              `r_ref(x)` comes from n samples of the base (SFT) policy on prompt x, scored by the
              same reward model: the empirical 0.85-quantile (`r_ref_quantile`, the paper's
              description) or a normal fit `mean + Φ⁻¹(0.85)·std` (`r_ref_normal`, the
              third-party implementation). With few samples both are noisy; the normal fit is
              steadier when the rewards are roughly Gaussian.
          """),
          _code("""
              rng = np.random.default_rng(0)
              TRIALS = 200 if FAST else 2000
              true_ref = float(jax.scipy.stats.norm.ppf(0.85))  # the 0.85-quantile of N(0, 1) rewards
              ns = (4, 8, 16, 32, 64)
              spread = {"r_ref_quantile": [], "r_ref_normal": []}
              for n in ns:
                samples = jnp.asarray(rng.normal(0.0, 1.0, (TRIALS, n)), jnp.float32)
                for name in spread:
                  est = np.asarray(getattr(rewards, name)(samples))  # [TRIALS]: one r_ref per prompt
                  spread[name].append(np.quantile(est - true_ref, [0.1, 0.5, 0.9]))

              one = jnp.asarray(rng.normal(0.0, 1.0, 16), jnp.float32)
              fig, axes = plt.subplots(1, 2, figsize=(13, 4))
              axes[0].hist(np.asarray(one), bins=10, color="0.7", label="16 base-policy rewards")
              for name, colour in (("r_ref_quantile", "C0"), ("r_ref_normal", "C1")):
                axes[0].axvline(float(getattr(rewards, name)(one)), color=colour, lw=2, label=name)
              axes[0].axvline(true_ref, color="k", ls=":", label="true 0.85-quantile")
              axes[0].set(title="one prompt", xlabel="reward")
              axes[0].legend()
              for (name, s), colour, dx in zip(spread.items(), ("C0", "C1"), (-0.04, 0.04)):
                s = np.asarray(s)
                x = np.log2(ns) + dx
                axes[1].errorbar(x, s[:, 1], yerr=[s[:, 1] - s[:, 0], s[:, 2] - s[:, 1]],
                                 fmt="o-", color=colour, capsize=3, label=name)
              axes[1].axhline(0, color="k", lw=0.6)
              axes[1].set_xticks(np.log2(ns), [str(n) for n in ns])
              axes[1].set(xlabel="samples per prompt n", ylabel="estimate − truth",
                          title=f"median and 10–90% range over {TRIALS} prompts")
              axes[1].legend()
              fig.tight_layout()
          """),
          _md("""
              ## 3. Combining two rewards

              Two properties, say helpfulness r₁ and harmlessness r₂, each with its reference at
              0. The raw sum's level sets are straight lines: one unit of harmlessness trades for
              one of helpfulness anywhere. The LSC sum's level sets bend: far above the reference
              a property is worth almost nothing more, so the best responses are good on **both**.
          """),
          _code("""
              g = np.linspace(-5, 5, 201)
              grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1), jnp.float32)  # [..., M = 2]
              zero = jnp.zeros(2)
              combined = {
                  "raw_sum: r₁ + r₂": rewards.combine_rewards(grid, mode="raw_sum"),
                  "lsc_sum: logσ(r₁) + logσ(r₂)": rewards.combine_rewards(grid, zero, mode="lsc_sum"),
              }
              np.testing.assert_allclose(combined["lsc_sum: logσ(r₁) + logσ(r₂)"],
                                         rewards.lsc(grid, zero).sum(-1), rtol=1e-5)

              # 400 candidate responses to one prompt; each mode picks its best.
              cand = rng.multivariate_normal([0, 0], [[4, -3.2], [-3.2, 4]], 400).astype(np.float32)
              fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
              for ax, (title, values) in zip(axes, combined.items()):
                cs = ax.contourf(g, g, np.asarray(values), levels=20, cmap="viridis")
                fig.colorbar(cs, ax=ax)
                ax.scatter(cand[:, 0], cand[:, 1], s=6, c="w", alpha=0.6)
                mode = title.split(":")[0]
                score = rewards.combine_rewards(jnp.asarray(cand), zero, mode=mode)
                best = cand[int(jnp.argmax(score))]
                ax.plot(*best, "r*", ms=18, label=f"best under {mode}: ({best[0]:.1f}, {best[1]:.1f})")
                ax.set(title=title, xlabel="r₁ (helpfulness)", ylabel="r₂ (harmlessness)")
                ax.legend(loc="lower left")
              fig.tight_layout()
          """),
      ],
  )


NOTEBOOKS = {
    "objectives_tour.ipynb": objectives_tour,
    "listwise_lipo.ipynb": listwise_lipo,
    "train_tiny_policy.ipynb": train_tiny_policy,
    "zo_ranksgd.ipynb": zo_ranksgd,
    "reward_transforms.ipynb": reward_transforms,
}


def build_all() -> dict[str, str]:
  """File name -> notebook JSON text (what `colabs/` must contain)."""
  return {name: nbformat.writes(build()) + "\n" for name, build in NOTEBOOKS.items()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true", help="only check the stored notebooks")
  args = parser.parse_args(argv)
  stale = []
  for name, text in build_all().items():
    path = os.path.join(HERE, name)
    current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
    if current != text:
      stale.append(name)
      if not args.check:
        with open(path, "w", encoding="utf-8") as f:
          f.write(text)
  if args.check and stale:
    print(f"stale notebooks (run python colabs/make_notebooks.py): {', '.join(stale)}")
    return 1
  print(("up to date: " if args.check or not stale else "wrote: ") + ", ".join(stale or NOTEBOOKS))
  return 0


if __name__ == "__main__":
  sys.exit(main())
