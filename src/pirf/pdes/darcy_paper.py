"""``darcy-paper``: Darcy flow on the paper's cell-centred grid, scored with the paper's residual.

    -div(a grad u) = 1   on (0,1)^2,   u = 0 on the boundary,   a = 12 where g >= 0 else 3

Grid (DiffusionPDE's Darcy data, made with the FNO generator, ``GRF.m`` + ``solve_gwf.m``): the R x
R pixels are cells of side h = 1/R with centres x_j = (j + 1/2) h; the boundary is the outer edge of
the ring cells, so u is not zero on any pixel. The GRF g is FNO's cosine series (modes 0..R-1,
sigma = tau^(alpha-1)) evaluated at the cell centres, as MATLAB's ``idct2`` does.

Generation: pirf's own, not FNO's (which spline-interpolates the {3, 12} coefficient onto a
vertex grid, where it overshoots, solves there and spline-interpolates u back). Here a is
constant on each pixel; the solve is the conservative cell-centred finite-volume scheme
(harmonic-mean faces; a wall face half a cell from the ring centres) on a grid ``r`` times finer
(r odd, so every output centre is a fine centre), by CG preconditioned with the constant-
coefficient operator, inverted exactly by a DST-II; u is injected at the output centres.

Residual (``residual_form``): ``"paper"`` is PIRF's ``DarcyResidual`` (reward/pde.py): the
non-conservative form -a (u_yy + u_xx) - a_y u_y - a_x u_x - 1 with h = 1/R on every pixel,
central differences inside and one-sided ones on the ring (`findiff`, accuracy 2); ``"pirf"``
is the finite-volume balance the data are solved with, on the output grid (walls included).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pirf.errors import ConfigError
from pirf.pdes import random_fields as rf
from pirf.pdes.base import Grid
from pirf.pdes.darcy import _CG_RTOL, Darcy, _cg_iterations, _dot, flux_form_operator
from pirf.pdes.operators import diff_one_sided_edges
from pirf.pdes.paper import check_residual_form, d2_one_sided
from pirf.pdes.registry import register

if TYPE_CHECKING:
    from torch import Tensor


def cell_centred_grid(resolution: int) -> Grid:
    """Pixels as cells of [0, 1]^2: centres x_j = (j + 1/2) h, h = 1 / R (the boundary lies on the
    outer cell faces)."""
    h = 1.0 / resolution
    x = (np.arange(resolution) + 0.5) * h
    return Grid(resolution, ("y", "x"), (h, h), "dirichlet", (x, x))


# -- the cell-centred finite-volume solver (numpy / scipy) --------------------------------------------
@functools.lru_cache(maxsize=8)
def _inverse_symbol(m: int) -> np.ndarray:
    """1 / eigenvalues of h^2 * (-Laplacian) on m x m cells with walls (ghost u = -u): the DST-II
    modes sin(pi k (j + 1/2) / m), k = 1..m, eigenvalue 2 - 2 cos(pi k / m) per axis."""
    lam = 2.0 - 2.0 * np.cos(math.pi * np.arange(1, m + 1) / m)
    inv = 1.0 / (lam[:, None] + lam[None, :])
    inv.flags.writeable = False
    return inv


def _face_coefficients(a: np.ndarray) -> tuple[np.ndarray, ...]:
    """(east, west, north, south) face coefficients of every cell; a wall face carries 2 a_P
    (its distance to the centre is h/2), matching ghost values a = a_P, u = -u_P."""
    fx = 2 * a[:, :-1] * a[:, 1:] / (a[:, :-1] + a[:, 1:])
    fy = 2 * a[:-1, :] * a[1:, :] / (a[:-1, :] + a[1:, :])
    east = np.concatenate([fx, 2 * a[:, -1:]], axis=1)
    west = np.concatenate([2 * a[:, :1], fx], axis=1)
    north = np.concatenate([fy, 2 * a[-1:, :]], axis=0)
    south = np.concatenate([2 * a[:1, :], fy], axis=0)
    return east, west, north, south


def solve_cell_centred(a: np.ndarray, forcing: float) -> np.ndarray:
    """u ``[M, M]`` at the cell centres of the conservative scheme for ``a [M, M]`` (h = 1/M, u = 0
    on the walls), by preconditioned CG to a relative residual of 1e-10."""
    import scipy.fft

    m = a.shape[-1]
    h = 1.0 / m
    east, west, north, south = _face_coefficients(a)
    diag = east + west + north + south
    interior = (east[:, :-1], west[:, 1:], north[:-1, :], south[1:, :])  # couplings to real cells
    inv_symbol = _inverse_symbol(m)

    def apply_a(v: np.ndarray) -> np.ndarray:  # h^2 * A v
        out = diag * v
        out[:, :-1] -= interior[0] * v[:, 1:]
        out[:, 1:] -= interior[1] * v[:, :-1]
        out[:-1, :] -= interior[2] * v[1:, :]
        out[1:, :] -= interior[3] * v[:-1, :]
        return out

    def precondition(r: np.ndarray) -> np.ndarray:
        return scipy.fft.idstn(scipy.fft.dstn(r, type=2) * inv_symbol, type=2)

    u = np.zeros((m, m))
    r = np.full((m, m), forcing * h * h)
    tol = _CG_RTOL**2 * _dot(r, r)
    z = precondition(r)
    p, rz = z.copy(), _dot(r, z)
    for _ in range(_cg_iterations(a.max() / a.min())):
        q = apply_a(p)
        alpha = rz / _dot(p, q)
        u += alpha * p
        r -= alpha * q
        if _dot(r, r) <= tol:
            return u
        z = precondition(r)
        rz, rz_old = _dot(r, z), rz
        p = z + (rz / rz_old) * p
    raise ConfigError(
        f"darcy-paper: CG did not converge for a coefficient contrast of {a.max() / a.min():.3g}",
        "use a coefficient field with a moderate contrast max(a)/min(a)",
    )


# -- the benchmark ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DarcyPaper(Darcy):
    """Darcy on the paper's cell-centred grid (h = 1/R), with the paper's residual by default.

    Parameters as `Darcy` (a_high, a_low, alpha, tau, forcing; ``refine``, odd, and
    ``max_fine_nodes``: fine cells per side), except ``coefficient`` (always ``"cells"``: a is
    constant on each pixel) and ``residual_form`` (``"paper"`` or ``"pirf"``, see the module
    docstring). Default 128 x 128 (the paper's), refine 3: ~4.5 samples/s on one core.
    """

    name: ClassVar[str] = "darcy-paper"
    description: ClassVar[str] = (
        "darcy on the paper's cell-centred grid (h = 1/R); residual: the paper's non-conservative "
        "form with one-sided ring stencils (PIRF, arXiv 2509.20570)"
    )
    solver: ClassVar[str] = (
        "cell-centred conservative finite volumes (harmonic-mean faces, walls) on a refined grid, "
        "DST-II-preconditioned CG, injected at the output cell centres"
    )
    default_resolution: ClassVar[int] = 128
    paper_resolution: ClassVar[int] = 128

    residual_form: str = "paper"

    def __post_init__(self) -> None:
        check_residual_form(self.name, self.residual_form)
        if self.coefficient != "cells":
            raise ConfigError(
                f"darcy-paper: coefficient={self.coefficient!r} is not supported",
                "use coefficient='cells' (a constant on each pixel; the paper's data give a per pixel)",
            )
        self._check_phases_and_solver(min_fine_nodes=8, example="refine=3, max_fine_nodes=400")

    def grid(self, resolution: int) -> Grid:
        return cell_centred_grid(resolution)

    def refine_factor(self, resolution: int) -> int:
        """Fine cells per output cell: ``refine`` capped so that the fine grid has at most
        ``max_fine_nodes`` cells per side, rounded down to an odd number (1 stays 1)."""
        r = int(min(self.refine, max(1, self.max_fine_nodes // resolution)))
        return r - (1 - r % 2)

    def coefficients(self, rng: np.random.Generator, resolution: int) -> np.ndarray:
        """a ``[R, R]``: a_high where FNO's cosine GRF (alpha, tau) at the cell centres is >= 0."""
        coefficients = rf.neumann_coefficients([rng], resolution, self.alpha, self.tau)
        basis = rf.cosine_basis(resolution, self.grid(resolution).coords[0])
        g = rf.evaluate_series(coefficients, basis, basis)[0]
        return np.where(g >= 0, self.a_high, self.a_low)

    def solve(self, a: np.ndarray) -> np.ndarray:
        """u at the cell centres for pixel coefficients ``a [..., N, N]`` (no refinement)."""
        a = np.asarray(a, dtype=np.float64)
        if a.ndim < 2 or a.shape[-1] != a.shape[-2] or (a <= 0).any() or not np.isfinite(a).all():
            raise ConfigError(
                f"darcy-paper.solve: need finite positive coefficients [..., N, N], got shape {a.shape}",
                "threshold or clip the coefficient field before solving",
            )
        flat = a.reshape(-1, *a.shape[-2:])
        return np.stack([solve_cell_centred(f, self.forcing) for f in flat]).reshape(a.shape)

    def solve_samples(self, rngs: Sequence[np.random.Generator], resolution: int, start: int) -> np.ndarray:
        r = self.refine_factor(resolution)
        out = np.empty((len(rngs), 2, resolution, resolution))
        for i, rng in enumerate(rngs):
            a = self.coefficients(rng, resolution)
            fine = np.repeat(np.repeat(a, r, axis=0), r, axis=1)
            out[i, 0] = a
            out[i, 1] = solve_cell_centred(fine, self.forcing)[r // 2 :: r, r // 2 :: r]
        return out

    # -- residual --------------------------------------------------------------------------
    def residual(self, x: Tensor) -> Tensor:
        """Residual map ``[B, R, R]`` of ``x [B, 2, R, R]`` (a, u) on every pixel, h = 1/R.

        ``"paper"``: -a u_yy - a_y u_y - a u_xx - a_x u_x - forcing with the paper's stencils
        (`paper_residual`). ``"pirf"``: the cell-centred flux balance (`pirf_residual`).
        """
        return self.paper_residual(x) if self.residual_form == "paper" else self.pirf_residual(x)

    def paper_residual(self, x: Tensor) -> Tensor:
        """PIRF's Darcy residual (reward/pde.py, ``DarcyResidual``, pixels_at_boundary=False):
        non-conservative, h = 1/R, 2nd-order central differences inside and one-sided 3- and
        4-point stencils on the ring; the equation (not u = 0) is scored on the ring too."""
        self.check_fields(x)
        a, u = x[:, 0], x[:, 1]
        h = 1.0 / x.shape[-1]
        terms = [
            -a * d2_one_sided(u, h, dim) - diff_one_sided_edges(a, h, dim) * diff_one_sided_edges(u, h, dim)
            for dim in (-2, -1)
        ]
        return terms[0] + terms[1] - self.forcing

    def pirf_residual(self, x: Tensor) -> Tensor:
        """-div(a grad u) - forcing by the conservative cell-centred scheme the data are solved
        with (harmonic-mean faces; on the ring a wall face at h/2 with u = 0), 2nd order."""
        import torch

        self.check_fields(x)
        a, u = x[:, 0], x[:, 1]
        a_ext = torch.cat([a[:, :1], a, a[:, -1:]], dim=1)
        a_ext = torch.cat([a_ext[:, :, :1], a_ext, a_ext[:, :, -1:]], dim=2)  # ghost a = a_P
        u_ext = torch.cat([-u[:, :1], u, -u[:, -1:]], dim=1)
        u_ext = torch.cat([-u_ext[:, :, :1], u_ext, -u_ext[:, :, -1:]], dim=2)  # ghost u = -u_P
        return flux_form_operator(a_ext, u_ext, 1.0 / x.shape[-1]) - self.forcing


register(DarcyPaper)

__all__ = ["DarcyPaper", "cell_centred_grid", "solve_cell_centred"]
