"""Darcy flow on the unit square: a two-phase permeability, solved on a finer grid.

    -div(a grad u) = f   on (0,1)^2,   u = 0 on the boundary,   f = 1,

    a = a_high (12) where g >= 0, else a_low (3),   g ~ GRF(alpha = 2, tau = 3)

(DiffusionPDE's Darcy data; channels ``(a, u)``, typical |u| ~ 0.01.) The GRF is the mean-zero
cosine series of `random_fields.neumann_coefficients` with the modes the R-node output grid
resolves (k = 0..R-1 per axis). Grid: vertex-centred, nodes x_j = j h, h = 1 / (R - 1),
boundary nodes included.

Generation (the "honest data floor"): the solve runs on a grid ``r`` times finer
(``r * (R - 1) + 1`` nodes per side, so the output nodes are a subset of the fine ones) with
the conservative 5-point finite-volume scheme below, and u is injected (every r-th node) onto
the output grid. Two coefficient models (``coefficient``):

- ``"cells"`` (default): g is thresholded at the output nodes, and a is constant on each
  output node's cell (fine nodes take the value of their nearest output node; r is odd, so
  none is equidistant). The a channel then describes the coefficient *exactly*, as in
  DiffusionPDE's data, where a is given on the grid; the data floor is the output stencil's
  error on the true solution: small in the interior, O(1) on interface pixels, where u has a
  kink the stencil cannot see.
- ``"continuous"``: g is evaluated and thresholded on the fine grid, so the interface has
  sub-cell bends and islands the a channel cannot show; the floor is several times higher
  everywhere (a model of data measured from a continuous medium).

With ``refine=1`` the data are exact discrete solutions (floor = float32 rounding). Measured
floors per resolution: docs/pdes.md (``python benchmarks/data_generation.py``).

Fine solve: conjugate gradients preconditioned by the constant-coefficient 5-point Laplacian,
inverted exactly with a fast sine transform (DST-I). The preconditioned operator's condition
number is at most max(a) / min(a) (4 here), so CG gains a factor ~3 per iteration, independent
of the grid size; samples are solved one at a time, so each depends only on its own generator.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pirf.errors import ConfigError, NonFiniteError, ShapeError
from pirf.pdes import random_fields as rf
from pirf.pdes.base import PDE, Grid, unit_square_grid
from pirf.pdes.operators import embed_interior, laplacian_5pt
from pirf.pdes.registry import register

if TYPE_CHECKING:
    from torch import Tensor

RESIDUAL_FORMS = ("conservative", "nonconservative")
COEFFICIENT_MODELS = ("cells", "continuous")
_CG_RTOL = 1e-10  # relative 2-norm of the fine-grid algebraic residual at which CG stops


# -- the two discrete operators (torch, batched, differentiable) --------------------------------
def harmonic_mean(p: Tensor, q: Tensor, min_sum: float = 1e-6) -> Tensor:
    """Face coefficient 2 p q / (p + q) of two nodal coefficients (defined for p, q > 0).

    The denominator is clamped at ``min_sum`` so that non-positive input (e.g. a partly
    denoised sample) yields large but finite values instead of inf/NaN.
    """
    return 2 * p * q / (p + q).clamp(min=min_sum)


def flux_form_operator(a: Tensor, u: Tensor, h: float) -> Tensor:
    """-div(a grad u) on interior nodes by conservative 5-point finite volumes, 2nd order.

    ``[..., H, W] -> [..., H-2, W-2]``: -(1/h^2) [a_e (u_E - u_P) - a_w (u_P - u_W) + a_n (u_N - u_P)
    - a_s (u_P - u_S)] with face coefficients a_e = harmonic_mean(a_P, a_E) etc.; 2nd order for
    smooth a and u, an exact discrete flux balance for any a > 0 (the scheme the data are solved with).
    """
    ax = harmonic_mean(a[..., 1:-1, :-1], a[..., 1:-1, 1:])  # faces (i, j+1/2) on interior rows
    qx = ax * (u[..., 1:-1, 1:] - u[..., 1:-1, :-1])
    ay = harmonic_mean(a[..., :-1, 1:-1], a[..., 1:, 1:-1])  # faces (i+1/2, j) on interior columns
    qy = ay * (u[..., 1:, 1:-1] - u[..., :-1, 1:-1])
    return -((qx[..., 1:] - qx[..., :-1]) + (qy[..., 1:, :] - qy[..., :-1, :])) / h**2


def nonconservative_operator(a: Tensor, u: Tensor, h: float) -> Tensor:
    """-a Lap(u) - a_x u_x - a_y u_y on interior nodes (non-conservative form), 2nd order.

    ``[..., H, W] -> [..., H-2, W-2]``; central differences throughout (5-point Laplacian,
    (v_E - v_W) / 2h), 2nd order for smooth a and u. The form PIRF's public code scores Darcy
    with; across a jump of a it sees a_x ~ (a_high - a_low) / 2h, so interface pixels dominate.
    """
    ax = (a[..., 1:-1, 2:] - a[..., 1:-1, :-2]) / (2 * h)
    ay = (a[..., 2:, 1:-1] - a[..., :-2, 1:-1]) / (2 * h)
    ux = (u[..., 1:-1, 2:] - u[..., 1:-1, :-2]) / (2 * h)
    uy = (u[..., 2:, 1:-1] - u[..., :-2, 1:-1]) / (2 * h)
    return -a[..., 1:-1, 1:-1] * laplacian_5pt(u, h, h) - ax * ux - ay * uy


# -- the fine-grid solver (numpy / scipy) --------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _inverse_laplacian_symbol(m: int) -> np.ndarray:
    """1 / eigenvalues of h^2 * (-5-point Laplacian) on an m x m interior grid (DST-I modes)."""
    lam = 2.0 - 2.0 * np.cos(math.pi * np.arange(1, m + 1) / (m + 1))
    inv = 1.0 / (lam[:, None] + lam[None, :])
    inv.flags.writeable = False
    return inv


def _fv_stencil(a: np.ndarray) -> tuple[np.ndarray, ...]:
    """Face coefficients (east, west, north, south) and their sum on the interior nodes of ``a``."""
    fx = 2 * a[:, :-1] * a[:, 1:] / (a[:, :-1] + a[:, 1:])
    fy = 2 * a[:-1, :] * a[1:, :] / (a[:-1, :] + a[1:, :])
    east, west, north, south = fx[1:-1, 1:], fx[1:-1, :-1], fy[1:, 1:-1], fy[:-1, 1:-1]
    return east, west, north, south, east + west + north + south


def _dot(p: np.ndarray, q: np.ndarray) -> float:
    # einsum's own loop, not BLAS: a threaded BLAS dot on ~1e4 numbers can cost 100x more
    return float(np.einsum("ij,ij->", p, q))


def _cg_iterations(contrast: float) -> int:
    """Twice the iterations of the CG bound 2 q^n (q = (sqrt(kappa) - 1) / (sqrt(kappa) + 1)), plus 50."""
    q = (math.sqrt(contrast) - 1) / (math.sqrt(contrast) + 1)
    bound = math.log(2 / _CG_RTOL) / -math.log(q) if q > 0 else 1.0
    return 2 * math.ceil(bound) + 50


def _solve_fv(a: np.ndarray, forcing: float) -> np.ndarray:
    """u ``[N, N]`` of the conservative FV scheme for one positive coefficient field ``a [N, N]``."""
    import scipy.fft

    n = a.shape[-1]
    h = 1.0 / (n - 1)
    east, west, north, south, diag = _fv_stencil(a)
    inv_symbol = _inverse_laplacian_symbol(n - 2)

    def apply_a(v: np.ndarray) -> np.ndarray:  # h^2 * A v on the interior; v [N, N] is 0 on the ring
        c = v[1:-1, 1:-1]
        return (
            diag * c - east * v[1:-1, 2:] - west * v[1:-1, :-2] - north * v[2:, 1:-1] - south * v[:-2, 1:-1]
        )

    def precondition(r: np.ndarray) -> np.ndarray:  # exact inverse of h^2 * (-5-point Laplacian)
        return scipy.fft.idstn(scipy.fft.dstn(r, type=1) * inv_symbol, type=1)

    # preconditioned conjugate gradients on h^2 A u = h^2 f; u and p carry the zero boundary ring
    u, p = np.zeros((n, n)), np.zeros((n, n))
    r = np.full((n - 2, n - 2), forcing * h * h)
    tol = _CG_RTOL**2 * _dot(r, r)  # on |r|^2
    z = precondition(r)
    p[1:-1, 1:-1], rz = z, _dot(r, z)
    for _ in range(_cg_iterations(a.max() / a.min())):
        q = apply_a(p)
        alpha = rz / _dot(p[1:-1, 1:-1], q)
        u += alpha * p
        r -= alpha * q
        if _dot(r, r) <= tol:
            return u
        z = precondition(r)
        rz, rz_old = _dot(r, z), rz
        p[1:-1, 1:-1] = z + (rz / rz_old) * p[1:-1, 1:-1]
    raise ConfigError(
        f"darcy: CG did not converge for a coefficient contrast of {a.max() / a.min():.3g}",
        "use a coefficient field with a moderate contrast max(a)/min(a)",
    )


# -- the benchmark -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Darcy(PDE):
    """Darcy flow: -div(a grad u) = forcing on (0,1)^2, u = 0 on the boundary, a in {a_low, a_high}.

    Channels (a, u), physical units; a is a_high where a GRF(alpha, tau) is >= 0, else a_low.
    Data are solved on a grid ``refine_factor(R)`` times finer and injected (see the module
    docstring); ``refine`` is lowered at large R so that the fine grid has at most
    ``max_fine_nodes`` nodes per side (odd, at least 3, for the default ``coefficient="cells"``):
    refine 5 at R = 32 and 64, 3 at 128. ``residual_form`` picks the conservative finite-volume
    residual (default, the scheme the solver uses) or PIRF's non-conservative central-difference form; where a
    node's four neighbours share its a value the two coincide, so they differ only on
    ``interface`` pixels.
    """

    name: ClassVar[str] = "darcy"
    fields: ClassVar[tuple[str, ...]] = ("a", "u")
    reward_channels: ClassVar[tuple[str, ...] | None] = ("u",)  # a is projected, never moved
    boundary: ClassVar = "dirichlet"
    description: ClassVar[str] = (
        "-div(a grad u) = 1 on (0,1)^2, u = 0 on the boundary, a = 12 where GRF(2, 3) >= 0 else 3"
    )
    solver: ClassVar[str] = (
        "conservative 5-point finite volumes (harmonic-mean faces) on a refined grid, "
        "sine-transform-preconditioned CG, injected onto the output grid"
    )
    default_resolution: ClassVar[int] = 32
    paper_resolution: ClassVar[int] = 128
    min_resolution: ClassVar[int] = 8
    discrete_fields: ClassVar[tuple[str, ...]] = ("a",)

    a_high: float = 12.0
    a_low: float = 3.0
    alpha: float = 2.0
    tau: float = 3.0
    forcing: float = 1.0
    refine: int = 5
    max_fine_nodes: int = 400
    residual_form: str = "conservative"
    coefficient: str = "cells"

    def __post_init__(self) -> None:
        if self.coefficient not in COEFFICIENT_MODELS:
            raise ConfigError(
                f"darcy: unknown coefficient model {self.coefficient!r}",
                f"use one of: {', '.join(COEFFICIENT_MODELS)}",
            )
        if self.residual_form not in RESIDUAL_FORMS:
            raise ConfigError(
                f"darcy: unknown residual_form {self.residual_form!r}",
                f"use one of: {', '.join(RESIDUAL_FORMS)}",
            )
        self._check_phases_and_solver(min_fine_nodes=3, example="refine=4, max_fine_nodes=257")

    def _check_phases_and_solver(self, min_fine_nodes: int, example: str) -> None:
        """Refuse permeabilities that are not 0 < a_low < a_high and a solver refinement that is
        not an integer >= 1 on a fine grid of at least ``min_fine_nodes`` per side."""
        if not 0 < self.a_low < self.a_high:
            raise ConfigError(
                f"{self.name}: need 0 < a_low < a_high, got a_low={self.a_low}, a_high={self.a_high}",
                "use positive permeabilities with a_low below a_high (DiffusionPDE: 3 and 12)",
            )
        integers = all(isinstance(v, (int, np.integer)) for v in (self.refine, self.max_fine_nodes))
        if not integers or self.refine < 1 or self.max_fine_nodes < min_fine_nodes:
            raise ConfigError(
                f"{self.name}: refine={self.refine!r} must be an integer >= 1 and "
                f"max_fine_nodes={self.max_fine_nodes!r} at least {min_fine_nodes}",
                f"use e.g. {example} (refine=1 solves on the output grid itself)",
            )

    # -- grid and generation ---------------------------------------------------------------
    def grid(self, resolution: int) -> Grid:
        return unit_square_grid(resolution)

    def refine_factor(self, resolution: int) -> int:
        """Fine/output spacing ratio used at ``resolution``: ``refine``, capped so that the fine
        grid has at most ``max_fine_nodes`` nodes per side, but not below 2 (unless refine = 1).
        With ``coefficient="cells"`` it is rounded down to an odd number (at least 3), so that
        no fine node lies on a face between two output cells."""
        cap = max(2, (self.max_fine_nodes - 1) // (resolution - 1))
        r = int(min(self.refine, cap))
        if self.coefficient == "cells" and r > 1:
            r = max(3, r - (1 - r % 2))
        return r

    def _coefficients(
        self, rng: np.random.Generator, resolution: int, r: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(a on the output grid, a on the fine grid) of one sample."""
        coefficients = rf.neumann_coefficients([rng], resolution, self.alpha, self.tau)
        coarse_nodes = np.linspace(0.0, 1.0, resolution)
        if self.coefficient == "cells":  # a constant on each output node's cell: a_fine = nearest node
            basis = rf.cosine_basis(resolution, coarse_nodes)
            g = rf.evaluate_series(coefficients, basis, basis)[0]
            a = np.where(g >= 0, self.a_high, self.a_low)
            nearest = np.rint(np.arange(r * (resolution - 1) + 1) / r).astype(int)
            return a, a[np.ix_(nearest, nearest)]
        basis = rf.cosine_basis(resolution, np.linspace(0.0, 1.0, r * (resolution - 1) + 1))
        g = rf.evaluate_series(coefficients, basis, basis)[0]
        a_fine = np.where(g >= 0, self.a_high, self.a_low)
        return a_fine[::r, ::r], a_fine

    def solve(self, a: np.ndarray) -> np.ndarray:
        """Solve -div(a grad u) = forcing, u = 0 on the boundary, for nodal coefficients ``a``.

        ``a``: ``[..., N, N]`` positive values at the nodes of the vertex-centred grid on
        (0,1)^2 (h = 1/(N-1)); returns u, float64 of the same shape, from the conservative
        5-point scheme with harmonic-mean faces (`flux_form_operator`), by CG to a relative
        residual of 1e-10 (iterations grow like sqrt(max(a) / min(a))).
        """
        a = np.asarray(a, dtype=np.float64)
        if a.ndim < 2 or a.shape[-1] != a.shape[-2] or a.shape[-1] < 3:
            raise ShapeError(
                f"darcy.solve: coefficients have shape {a.shape}, expected [..., N, N] with N >= 3",
                "pass nodal values on a square vertex-centred grid, boundary nodes included",
            )
        if not np.isfinite(a).all():
            raise NonFiniteError("darcy.solve: coefficients contain NaN or inf", "repair the field first")
        if not (a > 0).all():
            raise ConfigError(
                "darcy.solve: coefficients must be positive",
                "threshold or clip the coefficient field before solving",
            )
        flat = a.reshape(-1, *a.shape[-2:])
        return np.stack([_solve_fv(field, self.forcing) for field in flat]).reshape(a.shape)

    def solve_samples(self, rngs: Sequence[np.random.Generator], resolution: int, start: int) -> np.ndarray:
        r = self.refine_factor(resolution)
        out = np.empty((len(rngs), 2, resolution, resolution))
        for i, rng in enumerate(rngs):  # one sample at a time: each depends only on its generator
            out[i, 0], a_fine = self._coefficients(rng, resolution, r)
            out[i, 1] = _solve_fv(a_fine, self.forcing)[::r, ::r]  # injection onto the output nodes
        return out

    # -- residual --------------------------------------------------------------------------
    def residual(self, x: Tensor) -> Tensor:
        """Residual map ``[B, R, R]`` of fields ``x [B, 2, R, R]`` (a, u), physical units.

        Interior nodes: -div(a grad u) - forcing, either `flux_form_operator` (conservative
        5-point finite volumes, harmonic-mean faces; default) or `nonconservative_operator`
        (-a Lap u - a_x u_x - a_y u_y, central differences, PIRF's form); both 2nd order for
        smooth a. Boundary ring: u - 0. ``a`` is used as given (no thresholding), so gradients
        reach both channels.
        """
        self.check_fields(x)
        a, u = x[:, 0], x[:, 1]
        h = 1.0 / (x.shape[-1] - 1)
        operator = flux_form_operator if self.residual_form == "conservative" else nonconservative_operator
        return embed_interior(operator(a, u, h) - self.forcing, u)

    def project(self, x: Tensor) -> Tensor:
        """Snap ``a`` onto its two phases, a = a_high where a > (a_low + a_high)/2 else a_low
        (PIRF thresholds the generated permeability the same way); ``u`` is kept. No gradient
        flows through the projected ``a``."""
        import torch

        a = torch.where(x[:, :1] > 0.5 * (self.a_low + self.a_high), self.a_high, self.a_low)
        return torch.cat([a.to(x.dtype).detach(), x[:, 1:]], dim=1)

    def regions(self, x: Tensor) -> dict[str, Tensor]:
        """Bool masks ``[B, R, R]``: ``boundary`` (the ring), ``interface`` (interior nodes with a
        4-neighbour whose a differs by more than (a_high - a_low)/2, i.e. across a jump) and
        ``interior`` (the other interior nodes). The three partition the grid."""
        import torch
        import torch.nn.functional as F

        self.check_fields(x)
        a = x[:, 0].detach()
        c, gap = a[:, 1:-1, 1:-1], 0.5 * (self.a_high - self.a_low)
        neighbours = (a[:, 1:-1, 2:], a[:, 1:-1, :-2], a[:, 2:, 1:-1], a[:, :-2, 1:-1])
        jump = torch.stack([(nb - c).abs() > gap for nb in neighbours]).any(dim=0)
        interface = F.pad(jump, (1, 1, 1, 1))
        boundary = super().regions(x)["boundary"]
        return {"interior": ~boundary & ~interface, "boundary": boundary, "interface": interface}


register(Darcy)

__all__ = ["Darcy", "flux_form_operator", "harmonic_mean", "nonconservative_operator"]
