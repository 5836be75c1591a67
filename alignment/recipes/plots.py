"""Plotting for the recipes: matplotlib on the Agg backend, imported only when a plot is drawn."""

from __future__ import annotations

import os


def pyplot():
  """`matplotlib.pyplot` on the non-interactive Agg backend (no display needed).

  Imported on the first call, so a recipe that does not plot never pays matplotlib's import.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  return plt


def save(fig, path: str, *, dpi: int = 110) -> str:
  """Lays out `fig`, writes it to `path` (creating the folder) and closes it; returns `path`."""
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=dpi)
  pyplot().close(fig)
  return path
