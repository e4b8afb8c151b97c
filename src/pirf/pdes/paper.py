"""What the ``-paper`` benchmarks share: the two residual forms, the paper's stencils, its metric.

The ``<pde>-paper`` benchmarks (``darcy-paper``, ``poisson-paper``, ``helmholtz-paper``,
``burgers-paper``, ``kolmogorov-paper``) follow the PIRF paper (Yuan et al., arXiv 2509.20570)
as its public code encodes it: the data conventions of the sets it trains on (DiffusionPDE,
Huang et al. 2024, built with the FNO generators; PG-Diffusion's Kolmogorov file) and its
residuals, ring pixels included, so that pirf's numbers can be set beside the paper's tables.
docs/paper.md lists every definition beside pirf's and the measured effect of each difference.

Each of them has a parameter ``residual_form``:

- ``"paper"`` (default): the residual exactly as the authors' code computes it, on every pixel;
  the paper's table entry is `paper_score` (the mean over samples of the all-pixel MSE / MAE).
- ``"pirf"``: pirf's residual on the same grid (the one the data are solved with: consistent,
  2nd order, boundary conditions instead of one-sided equation stencils on the ring).

Data do not depend on ``residual_form``. A fine-tune reads the residual of its base model's
PDE; to train a ``-paper`` model with the other form, set the reward's source to the
registered reward ``pirf-form`` (or ``paper-form``; `pirf.rewards`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from pirf.errors import ConfigError
from pirf.pdes.base import PDE

if TYPE_CHECKING:
    from torch import Tensor

RESIDUAL_FORMS = ("paper", "pirf")


def check_residual_form(name: str, form: str) -> None:
    """Refuse a ``residual_form`` other than ``"paper"`` and ``"pirf"``."""
    if form not in RESIDUAL_FORMS:
        raise ConfigError(
            f"{name}: unknown residual_form {form!r}",
            f"use one of: {', '.join(RESIDUAL_FORMS)} (the paper's residual, or pirf's on the same data)",
        )


# -- the paper's finite differences (torch, batched, differentiable) ----------------------------------
def d2_one_sided(u: Tensor, h: float, dim: int) -> Tensor:
    """Second derivative along ``dim``, 2nd order: central inside, one-sided 4-point on the edge
    pixels, (2u0 - 5u1 + 4u2 - u3) / h^2 and its mirror (the authors' `findiff` stencils, accuracy
    2; their first derivative is `operators.diff_one_sided_edges`)."""
    import torch

    u = u.movedim(dim, -1)
    inner = (u[..., 2:] - 2 * u[..., 1:-1] + u[..., :-2]) / h**2
    first = (2 * u[..., :1] - 5 * u[..., 1:2] + 4 * u[..., 2:3] - u[..., 3:4]) / h**2
    last = (2 * u[..., -1:] - 5 * u[..., -2:-1] + 4 * u[..., -3:-2] - u[..., -4:-3]) / h**2
    return torch.cat([first, inner, last], dim=-1).movedim(-1, dim)


def d1_replicate(u: Tensor, h: float, dim: int) -> Tensor:
    """Central first difference along ``dim`` of ``u`` padded by replication: (u[j+1] - u[j-1]) / 2h
    inside, (u[1] - u[0]) / 2h and (u[-1] - u[-2]) / 2h on the edges (half a one-sided difference)."""
    import torch

    u = u.movedim(dim, -1)
    padded = torch.cat([u[..., :1], u, u[..., -1:]], dim=-1)
    return ((padded[..., 2:] - padded[..., :-2]) / (2 * h)).movedim(-1, dim)


def laplacian_replicate(u: Tensor, h: float) -> Tensor:
    """5-point Laplacian of ``u [..., H, W]`` padded by replication on all four sides, ``[..., H, W]``.

    Inside: the 2nd-order 5-point stencil. On the ring the missing neighbour is the pixel itself,
    so for u = 0 on the ring the value there is u[1, j] / h^2 (plus the other axis' term).
    """
    import torch

    p = torch.cat([u[..., :1, :], u, u[..., -1:, :]], dim=-2)
    p = torch.cat([p[..., :1], p, p[..., -1:]], dim=-1)
    c = p[..., 1:-1, 1:-1]
    return (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:] - 4 * c) / h**2


# -- the paper's metric and the two forms as rewards --------------------------------------------------
def paper_score(pde: PDE, x: Tensor) -> dict[str, float]:
    """The paper's table entry for fields ``x [B, C, R, R]`` (physical units): the mean over samples
    of the mean over *all* pixels of R^2 ("residual MSE") and of |R| ("MAE"), R the paper's residual.

    (The authors average per-batch all-pixel means over equal batches: the same number.) ``pde``
    is a ``-paper`` benchmark; its paper form is used whatever its ``residual_form``.
    """
    r = with_residual_form(pde, "paper").residual(x)
    return {"mse": float(r.pow(2).mean()), "mae": float(r.abs().mean())}


def with_residual_form(pde: PDE, form: str) -> PDE:
    """The ``-paper`` benchmark ``pde`` with its residual computed in ``form`` ("paper" or "pirf");
    a `ConfigError` for a benchmark without the two forms."""
    if "residual_form" not in pde.param_names() or not pde.name.endswith("-paper"):
        raise ConfigError(
            f"{pde.name} has no paper residual form",
            "use a -paper benchmark (darcy-paper, poisson-paper, ...; `pirf pdes` lists them)",
        )
    return dataclasses.replace(pde, residual_form=form)


__all__ = [
    "RESIDUAL_FORMS",
    "check_residual_form",
    "d1_replicate",
    "d2_one_sided",
    "laplacian_replicate",
    "paper_score",
    "with_residual_form",
]
