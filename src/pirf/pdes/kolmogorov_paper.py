"""``kolmogorov-paper``: Kolmogorov flow at Re = 1000, 256 x 256, in the authors' orientation.

    w_t + u . grad w = Lap(w) / Re - 0.1 w + f,   f = -4 cos(4 y),   (x, y) in [0, 2 pi)^2

The paper trains on PG-Diffusion's file ``kf_2d_re1000_256_40seed.npy`` (Shu et al. 2023; PIRF's
``baselines/merge_kol.py``): 40 trajectories x 320 frames at 256 x 256, Re = 1000, frames 1/32
apart, three consecutive frames per sample. In those arrays rows are x and columns y: the
forcing varies along the *columns* (PIRF's ``KolmogorovResidual`` builds f from the second
meshgrid output with ``indexing='ij'``). pirf's `Kolmogorov` has rows = y; this benchmark
generates with the same solver and stores the transpose, so its samples are oriented like the
authors'. Generation at 256 is CPU-hours: one trajectory (20 time units of spin-up on the 256 grid,
9 on the 512 fine grid) takes ~5 min on one core and yields 32 samples, so the paper's ~13,000
samples take ~35 core-hours (docs/paper.md; ``-p refine=1`` is ~5x cheaper, less resolved).

Residual (``residual_form``): ``"paper"`` is PIRF's ``KolmogorovResidual``: spectral derivatives
with integer wavenumbers, the Nyquist wavenumber taken as -N/2 and the fields rebuilt from half
spectra (so the Nyquist row enters the row derivatives), the mean mode of the Laplacian kept as
-mean(w) (its 1/|k|^2 is set to 1), a central time difference, no dealiasing. ``"pirf"`` is
`Kolmogorov.residual` applied in pirf's orientation (Nyquist modes of odd derivatives zeroed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pirf.pdes.base import ConditioningField, Grid
from pirf.pdes.kolmogorov import Kolmogorov
from pirf.pdes.paper import check_residual_form
from pirf.pdes.registry import register

if TYPE_CHECKING:
    from torch import Tensor


def _authors_spectral(w: Tensor, length: float) -> dict[str, Tensor]:
    """Derivatives of ``w [..., N, N]`` as PIRF's Kolmogorov code takes them: full FFT, multiply,
    keep the half spectrum (columns 0..N/2) and invert with a real FFT. Wavenumbers per axis
    k = 0..N/2-1, -N/2..-1 (times 2 pi / L); ``d_r`` / ``d_c`` differentiate along rows / columns."""
    import torch

    n = w.shape[-1]
    real = w.dtype
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=real, device=w.device) * (2 * math.pi / length)
    k_r, k_c = k[:, None], k[None, :]
    k2 = k_r**2 + k_c**2
    k2 = torch.where(k2 > 0, k2, torch.ones_like(k2))  # the mean mode: 1/|k|^2 -> 1
    w_hat = torch.fft.fft2(w)
    psi_hat = w_hat / k2

    def back(z: Tensor) -> Tensor:
        return torch.fft.irfft2(z[..., : n // 2 + 1], s=(n, n))

    return {
        "psi_c": back(1j * k_c * psi_hat),
        "psi_r": back(1j * k_r * psi_hat),
        "w_r": back(1j * k_r * w_hat),
        "w_c": back(1j * k_c * w_hat),
        "lap": back(-k2 * w_hat),
    }


@dataclass(frozen=True)
class KolmogorovPaper(Kolmogorov):
    """Kolmogorov flow at the paper's setting: Re = 1000, 256 x 256, rows = x, columns = y.

    Parameters as `Kolmogorov` (``re`` default 1000) plus ``residual_form``. The conditioning
    fields sin(4y), cos(4y) vary along the columns, like the forcing.
    """

    name: ClassVar[str] = "kolmogorov-paper"
    description: ClassVar[str] = (
        "kolmogorov at Re = 1000, 256 x 256, rows x / columns y as PG-Diffusion's data; residual: "
        "the paper's spectral form (PIRF, arXiv 2509.20570)"
    )
    default_resolution: ClassVar[int] = 256
    paper_resolution: ClassVar[int] = 256
    paper_params: ClassVar[dict] = {}

    re: float = 1000.0
    residual_form: str = "paper"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_residual_form(self.name, self.residual_form)

    def grid(self, resolution: int) -> Grid:
        g = super().grid(resolution)
        return Grid(resolution, ("x", "y"), g.spacing, g.boundary, g.coords)

    def laminar(self, resolution: int) -> np.ndarray:
        """The steady laminar state ``[R, R]``, constant along rows (it varies with y = columns)."""
        return super().laminar(resolution).T.copy()

    def conditioning(self, resolution: int) -> tuple[ConditioningField, ...]:
        """sin(k_f y) and cos(k_f y) with y = 2 pi j / R on *column* j (constant along rows)."""
        k = self.forcing_wavenumber
        fields = []
        for field in super().conditioning(resolution):
            name = field.name.split("(")[0]
            formula = f"{name}({k} * y) with y = 2 pi j / R on column j (constant along rows)"
            fields.append(ConditioningField(field.name, formula, field.values.T.copy()))
        return tuple(fields)

    def trajectory(self, w0: np.ndarray, frames: Sequence[int]) -> np.ndarray:
        """As `Kolmogorov.trajectory`, in and out in this benchmark's orientation (rows = x)."""
        w0 = np.swapaxes(np.asarray(w0), -1, -2)
        return np.swapaxes(super().trajectory(w0, frames), -1, -2).copy()

    def solve_samples(self, rngs: Sequence[np.random.Generator], resolution: int, start: int) -> np.ndarray:
        return np.swapaxes(super().solve_samples(rngs, resolution, start), -1, -2).copy()

    # -- residual --------------------------------------------------------------------------
    def residual(self, x: Tensor) -> Tensor:
        """``"paper"``: `paper_residual`; ``"pirf"``: `pirf_residual`. Shape ``[B, R, R]``."""
        return self.paper_residual(x) if self.residual_form == "paper" else self.pirf_residual(x)

    def paper_residual(self, x: Tensor) -> Tensor:
        """(w2 - w0) / 2 dt + u w_x + v w_y - Lap(w1) / Re + drag w1 - f on the middle frame, with
        u = psi_y, v = -psi_x (x = rows, y = columns) and the authors' spectral conventions."""
        import torch

        self.check_fields(x)
        w0, w1, w2 = x[:, 0], x[:, 1], x[:, 2]
        d = _authors_spectral(w1, self.length)
        r = w1.shape[-1]
        y = torch.arange(r, device=x.device, dtype=x.dtype) * (self.length / r)
        advection = d["psi_c"] * d["w_r"] - d["psi_r"] * d["w_c"]
        w_t = (w2 - w0) / (2 * self.dt_frame)
        return w_t + advection - d["lap"] / self.re + self.drag * w1 - self.forcing(y)[None, :]

    def pirf_residual(self, x: Tensor) -> Tensor:
        """pirf's Kolmogorov residual, evaluated on the transpose (pirf's orientation) and turned back."""
        return Kolmogorov.residual(self, x.transpose(-1, -2)).transpose(-1, -2)


register(KolmogorovPaper)

__all__ = ["KolmogorovPaper"]
