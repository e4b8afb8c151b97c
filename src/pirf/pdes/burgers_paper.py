"""``burgers-paper``: DiffusionPDE's Burgers data (nu = 0.01, 128 x 128) and the paper's residual.

    u_t + u u_x = nu u_xx,   x in [0, 1) periodic,   t in [0, 1],   u(x, 0) ~ GRF(2.5, 7, 49)

Data as `Burgers` (DiffusionPDE's ``gen_burgers1.m``: rows t_j = j / (R-1), both ends included,
columns x_i = i / R), with nu = 0.01 and R = 128 by default.

Residual (``residual_form``): ``"paper"`` is PIRF's ``BurgersResidual`` (reward/pde.py), which
does not follow the data's grid: dt = dx = 1/R; u is padded by *replication* in x (the data are
periodic) and in t; u_x and u_t are central differences of the padded field, and u_xx is the
central difference of the replicate-padded u_x (a 5-point-wide stencil, (u[i+2] - 2u[i] +
u[i-2]) / 4 dx^2 inside, which cannot see the grid-scale mode: docs/paper.md measures it).
``"pirf"`` is `Burgers.residual`: periodic compact stencils, dt = 1/(R-1), one-sided time edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pirf.pdes.burgers import Burgers
from pirf.pdes.paper import check_residual_form, d1_replicate
from pirf.pdes.registry import register

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class BurgersPaper(Burgers):
    """Burgers at the paper's setting (nu = 0.01, 128 x 128) with the paper's residual by default.

    Regions: ``boundary`` holds the pixels where the paper's stencil is not its interior one (the
    first and last time rows, the first and last two x columns); the rest is ``interior``.
    """

    name: ClassVar[str] = "burgers-paper"
    description: ClassVar[str] = (
        "burgers at nu = 0.01, 128 x 128 (DiffusionPDE); residual: the paper's replicate-padded "
        "stencils, dt = dx = 1/R (PIRF, arXiv 2509.20570)"
    )
    default_resolution: ClassVar[int] = 128
    paper_resolution: ClassVar[int] = 128
    paper_params: ClassVar[dict] = {}

    nu: float = 0.01
    residual_form: str = "paper"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_residual_form(self.name, self.residual_form)

    def residual(self, x: Tensor) -> Tensor:
        """``"paper"``: `paper_residual`; ``"pirf"``: `Burgers.residual`. Shape ``[B, R, R]``."""
        return self.paper_residual(x) if self.residual_form == "paper" else self.pirf_residual(x)

    def paper_residual(self, x: Tensor) -> Tensor:
        """u_t + u u_x - nu u_xx, replicate padding in t and x, dt = dx = 1/R, u_xx = D(D u)."""
        self.check_fields(x)
        u = x[:, 0]
        h = 1.0 / u.shape[-1]
        u_x = d1_replicate(u, h, dim=-1)
        u_t = d1_replicate(u, h, dim=-2)
        return u_t + u * u_x - self.nu * d1_replicate(u_x, h, dim=-1)

    def pirf_residual(self, x: Tensor) -> Tensor:
        """pirf's Burgers residual (periodic compact stencils, 2nd order everywhere)."""
        return Burgers.residual(self, x)

    def regions(self, x: Tensor) -> dict[str, Tensor]:
        import torch

        b, _, h, w = x.shape
        edge = torch.zeros(h, w, dtype=torch.bool, device=x.device)
        edge[[0, -1], :] = True
        edge[:, [0, 1, -2, -1]] = True
        edge = edge.expand(b, h, w)
        return {"interior": ~edge, "boundary": edge}


register(BurgersPaper)

__all__ = ["BurgersPaper"]
