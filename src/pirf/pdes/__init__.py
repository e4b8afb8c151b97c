"""The physics: five PDE benchmarks with solvers and residuals, and a registry for your own.

>>> import pirf.pdes
>>> darcy = pirf.pdes.get("darcy")
>>> x = darcy.generate(4, resolution=32, seed=0)   # [4, 2, 32, 32] float32, physical units
"""

from pirf.pdes import burgers, darcy, helmholtz, kolmogorov, poisson  # noqa: F401  (registers)
from pirf.pdes.base import PDE, ConditioningField, Grid, sample_rngs
from pirf.pdes.registry import get, get_class, names, register, unregister

__all__ = [
    "PDE",
    "ConditioningField",
    "Grid",
    "get",
    "get_class",
    "names",
    "register",
    "sample_rngs",
    "unregister",
]
