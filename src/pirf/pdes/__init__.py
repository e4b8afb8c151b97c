"""The physics: five PDE benchmarks with solvers and residuals, and a registry for your own.

>>> import pirf.pdes
>>> darcy = pirf.pdes.get("darcy")
>>> x = darcy.generate(4, resolution=32, seed=0)   # [4, 2, 32, 32] float32, physical units

``<name>-paper`` variants follow the PIRF paper's data and residual definitions (`pirf.pdes.paper`,
docs/paper.md).
"""

from pirf.pdes import (  # noqa: F401  (importing a module registers its benchmarks)
    burgers,
    burgers_paper,
    darcy,
    darcy_paper,
    elliptic_paper,
    helmholtz,
    kolmogorov,
    kolmogorov_paper,
    poisson,
)
from pirf.pdes.base import PDE, ConditioningField, Grid, sample_rngs
from pirf.pdes.plugins import get_recorded, load_plugin, plugin_of
from pirf.pdes.registry import get, get_class, names, register, unregister

__all__ = [
    "PDE",
    "ConditioningField",
    "Grid",
    "get",
    "get_class",
    "get_recorded",
    "load_plugin",
    "names",
    "plugin_of",
    "register",
    "sample_rngs",
    "unregister",
]
