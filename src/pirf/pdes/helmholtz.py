"""Helmholtz benchmark: Laplacian(u) + k^2 u = f, u = 0 on the boundary of (0,1)^2 (see `elliptic`)."""

from pirf.pdes.elliptic import Helmholtz
from pirf.pdes.registry import register

register(Helmholtz)

__all__ = ["Helmholtz"]
