"""`alignment`: a JAX-native library for aligning language models with preference feedback.

Floors, bottom up (`docs/architecture.md`): `alignment.arrays` (array helpers); the pure core
(`losses`, `scores`, `metrics`, `rewards`, `zo`), which imports nothing from the engine
(`models`, `data`, `training`, `parallel`); the recipes (`alignment.recipes`: whole runs with
typed configs). Import submodules explicitly; this package import is deliberately cheap.
"""

__version__ = "0.1.0"
