"""`alignment`: a JAX-native library for aligning language models with preference feedback.

The pure core (`alignment.losses`, `alignment.scores`, `alignment.metrics`, `alignment.rewards`,
`alignment.zo`) imports nothing from the infrastructure (`models`, `data`, `training`,
`parallel`). Import submodules explicitly; this package import is deliberately cheap.
"""

__version__ = "0.1.0"
