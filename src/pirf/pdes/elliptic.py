"""Poisson and Helmholtz on the unit square with zero Dirichlet data, solved spectrally.

    Laplacian(u) + k^2 u = f   on (0,1)^2,   u = 0 on the boundary      (Poisson: k = 0)

The source f ~ GRF(alpha = 2, tau = 3) is drawn as a sine series (so f = 0 on the boundary,
as the DiffusionPDE Helmholtz data require), and each sine mode is solved exactly:

    u_k = f_k / (k^2 - pi^2 (k1^2 + k2^2)).

The data are therefore exact at the nodes: their residual under the 5-point stencil is the
stencil's own truncation error, O(h^2), small but real (the "data floor").
Grid: vertex-centred, nodes x_j = j h, h = 1 / (R - 1), boundary nodes included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pirf.errors import ConfigError
from pirf.pdes import random_fields as rf
from pirf.pdes.base import PDE, Grid, unit_square_grid
from pirf.pdes.operators import embed_interior, laplacian_5pt

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class DirichletElliptic(PDE):
    """Shared machinery of `Poisson` and `Helmholtz` (a sine-series solve and a 5-point residual)."""

    fields: ClassVar[tuple[str, ...]] = ("f", "u")
    reward_channels: ClassVar[tuple[str, ...] | None] = ("u",)  # the source poses the problem
    boundary: ClassVar = "dirichlet"
    default_resolution: ClassVar[int] = 64
    min_resolution: ClassVar[int] = 8
    solver: ClassVar[str] = "exact sine-series (spectral) solve of a band-limited GRF source"

    alpha: float = 2.0
    tau: float = 3.0

    @property
    def k_squared(self) -> float:
        """The k^2 of Laplacian(u) + k^2 u = f."""
        return 0.0

    def grid(self, resolution: int) -> Grid:
        return unit_square_grid(resolution)

    def solve_sine_series(self, coefficients: np.ndarray, resolution: int) -> np.ndarray:
        """Fields ``[B, 2, R, R]`` (f, u) for f = sum c[b,k1,k2] sin(pi k1 y) sin(pi k2 x)."""
        n_modes = coefficients.shape[-1]
        k = np.arange(1, n_modes + 1)
        symbol = self.k_squared - math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2)
        nodes = self.grid(resolution).coords[0]
        basis = rf.sine_basis(n_modes, nodes)
        f = rf.evaluate_series(coefficients, basis, basis)
        u = rf.evaluate_series(coefficients / symbol, basis, basis)
        return np.stack([f, u], axis=1)

    def solve_samples(self, rngs: Sequence[np.random.Generator], resolution: int, start: int) -> np.ndarray:
        coefficients = rf.dirichlet_coefficients(rngs, resolution - 2, self.alpha, self.tau)
        return self.solve_sine_series(coefficients, resolution)

    def residual(self, x: Tensor) -> Tensor:
        """5-point residual Laplacian_h(u) + k^2 u - f on interior nodes (2nd order); the
        boundary-condition residual u - 0 on the boundary ring. Shape ``[B, R, R]``."""
        self.check_fields(x)
        f, u = x[:, 0], x[:, 1]
        h = 1.0 / (x.shape[-1] - 1)
        interior = laplacian_5pt(u, h, h) + self.k_squared * u[:, 1:-1, 1:-1] - f[:, 1:-1, 1:-1]
        return embed_interior(interior, u)


@dataclass(frozen=True)
class Poisson(DirichletElliptic):
    """Poisson: Laplacian(u) = f on (0,1)^2, u = 0 on the boundary, f ~ GRF(alpha, tau).

    Channels (f, u). Typical magnitudes: |f| ~ 0.3, |u| ~ 0.01.
    """

    name: ClassVar[str] = "poisson"
    description: ClassVar[str] = "Laplacian(u) = f on (0,1)^2, u = 0 on the boundary, f ~ GRF(2, 3)"


@dataclass(frozen=True)
class Helmholtz(DirichletElliptic):
    """Helmholtz: Laplacian(u) + k^2 u = f on (0,1)^2, u = 0 and f = 0 on the boundary.

    ``wavenumber`` k = 1 in DiffusionPDE; it must avoid the resonances k^2 = pi^2 (k1^2 + k2^2).
    """

    name: ClassVar[str] = "helmholtz"
    description: ClassVar[str] = "Laplacian(u) + k^2 u = f on (0,1)^2, u = 0 on the boundary, k = 1"

    wavenumber: float = 1.0

    @property
    def k_squared(self) -> float:
        return self.wavenumber**2

    def __post_init__(self) -> None:
        ratio = self.wavenumber**2 / math.pi**2  # resonance when ratio = k1^2 + k2^2, k1, k2 >= 1
        m = round(ratio)
        if abs(ratio - m) < 1e-9 and any(
            m - a * a >= 1 and math.isqrt(m - a * a) ** 2 == m - a * a
            for a in range(1, math.isqrt(max(m, 0)) + 1)
        ):
            raise ConfigError(
                f"helmholtz: wavenumber {self.wavenumber} is a resonance (k^2 = pi^2 * {m})",
                "choose a wavenumber away from pi * sqrt(k1^2 + k2^2)",
            )
