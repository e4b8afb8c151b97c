"""``poisson-paper`` and ``helmholtz-paper``: DiffusionPDE's data and the paper's residual.

    Laplacian(u) + k^2 u = f   on (0,1)^2,   u = 0 on the boundary     (Poisson: k = 0; Helmholtz: k = 1)

Data, as DiffusionPDE makes them (Huang et al. 2024, ``generate_poisson.m`` and
``generate_inhom_helmholtz.m``): vertex grid with the boundary nodes, h = 1/(R-1); the source f is
FNO's ``GRF.m`` field (cosine series, modes 0..R-1 per axis, sigma = tau^(alpha-1), evaluated
where MATLAB's ``idct2`` puts it, at (j + 1/2) / R), *not* zero on the boundary for Poisson and
set to zero on the ring for Helmholtz; u is the exact solution of the 5-point scheme with u = 0
on the ring (here by a sine transform, DST-I, instead of a sparse direct solve). So the
interior residual of the data is round-off, and f is not band-limited like pirf's sine series.

Residual (``residual_form``): ``"paper"`` is PIRF's ``PoissonResidual`` / ``HelmholtzResidual``
(reward/pde.py): the 5-point Laplacian of u padded by replication on all four sides, plus k^2 u,
minus f, on every pixel; on the ring of an exact solution it reads u[1, j] / h^2 - f[0, j].
``"pirf"`` is pirf's: the same stencil inside and the boundary condition u = 0 on the ring.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pirf.pdes import random_fields as rf
from pirf.pdes.elliptic import DirichletElliptic, Helmholtz, Poisson
from pirf.pdes.paper import check_residual_form, laplacian_replicate
from pirf.pdes.registry import register

if TYPE_CHECKING:
    from torch import Tensor


@functools.lru_cache(maxsize=8)
def _dst1_symbol(m: int) -> np.ndarray:
    """Eigenvalues of h^2 * (5-point Laplacian) on an m x m interior grid (DST-I modes)."""
    lam = 2.0 * np.cos(math.pi * np.arange(1, m + 1) / (m + 1)) - 2.0
    out = lam[:, None] + lam[None, :]
    out.flags.writeable = False
    return out


class _PaperElliptic(DirichletElliptic):
    """What ``poisson-paper`` and ``helmholtz-paper`` share (not registered itself)."""

    default_resolution: ClassVar[int] = 128
    paper_resolution: ClassVar[int] = 128
    solver: ClassVar[str] = "FNO's cosine GRF source; exact 5-point discrete solve (DST-I), u = 0 on the ring"
    zero_source_ring: ClassVar[bool] = False

    def source(self, rngs: Sequence[np.random.Generator], resolution: int) -> np.ndarray:
        """f ``[B, R, R]``: FNO's ``GRF(alpha, tau, R)`` (cosine series at (j + 1/2) / R)."""
        coefficients = rf.neumann_coefficients(rngs, resolution, self.alpha, self.tau)
        basis = rf.cosine_basis(resolution, (np.arange(resolution) + 0.5) / resolution)
        f = rf.evaluate_series(coefficients, basis, basis)
        if self.zero_source_ring:
            f[:, 0, :] = f[:, -1, :] = f[:, :, 0] = f[:, :, -1] = 0.0
        return f

    def solve_discrete(self, f: np.ndarray) -> np.ndarray:
        """u ``[B, R, R]``: Lap_h u + k^2 u = f on interior nodes (5-point, h = 1/(R-1)), u = 0 on
        the ring; exact up to round-off."""
        import scipy.fft

        r = f.shape[-1]
        h = 1.0 / (r - 1)
        symbol = _dst1_symbol(r - 2) / h**2 + self.k_squared
        u = np.zeros_like(f)
        interior = scipy.fft.dstn(f[:, 1:-1, 1:-1], type=1, axes=(-2, -1)) / symbol
        u[:, 1:-1, 1:-1] = scipy.fft.idstn(interior, type=1, axes=(-2, -1))
        return u

    def solve_samples(self, rngs: Sequence[np.random.Generator], resolution: int, start: int) -> np.ndarray:
        f = self.source(rngs, resolution)
        return np.stack([f, self.solve_discrete(f)], axis=1)

    def residual(self, x: Tensor) -> Tensor:
        """``"paper"``: `paper_residual`; ``"pirf"``: `pirf_residual`. Shape ``[B, R, R]``."""
        return self.paper_residual(x) if self.residual_form == "paper" else self.pirf_residual(x)

    def paper_residual(self, x: Tensor) -> Tensor:
        """Replicate-padded 5-point Laplacian(u) + k^2 u - f on every pixel, h = 1/(R-1)
        (PIRF's code); 2nd order inside, O(1/h^2) on the ring of any solution with u[1, j] != 0."""
        self.check_fields(x)
        f, u = x[:, 0], x[:, 1]
        return laplacian_replicate(u, 1.0 / (x.shape[-1] - 1)) + self.k_squared * u - f

    def pirf_residual(self, x: Tensor) -> Tensor:
        """pirf's residual: 5-point Laplacian(u) + k^2 u - f inside, u - 0 on the ring."""
        return DirichletElliptic.residual(self, x)


@dataclass(frozen=True)
class PoissonPaper(_PaperElliptic, Poisson):
    """Poisson as the paper's data and code define it (module docstring); channels (f, u).

    Typical magnitudes at 128: |f| ~ 0.3 RMS, up to ~2.5 in the corners (the cosine modes add up
    there); |u| up to ~0.03.
    """

    name: ClassVar[str] = "poisson-paper"
    description: ClassVar[str] = (
        "poisson with DiffusionPDE's data (cosine-GRF f, exact 5-point u); residual: the paper's "
        "replicate-padded Laplacian on every pixel (PIRF, arXiv 2509.20570)"
    )

    residual_form: str = "paper"

    def __post_init__(self) -> None:
        check_residual_form(self.name, self.residual_form)


@dataclass(frozen=True)
class HelmholtzPaper(_PaperElliptic, Helmholtz):
    """Helmholtz (k = 1) as the paper's data and code define it; f is zero on the ring."""

    name: ClassVar[str] = "helmholtz-paper"
    description: ClassVar[str] = (
        "helmholtz (k = 1) with DiffusionPDE's data (cosine-GRF f zeroed on the ring, exact 5-point u); "
        "residual: the paper's replicate-padded Laplacian on every pixel"
    )
    zero_source_ring: ClassVar[bool] = True

    residual_form: str = "paper"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_residual_form(self.name, self.residual_form)


register(PoissonPaper)
register(HelmholtzPaper)

__all__ = ["HelmholtzPaper", "PoissonPaper"]
