"""Poisson benchmark: Laplacian(u) = f, u = 0 on the boundary of (0,1)^2 (see `elliptic`)."""

from pirf.pdes.elliptic import Poisson
from pirf.pdes.registry import register

register(Poisson)

__all__ = ["Poisson"]
