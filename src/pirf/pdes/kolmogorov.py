"""Kolmogorov flow: forced, damped 2-D Navier-Stokes in vorticity form on the periodic square.

    w_t + u . grad w = (1/Re) Laplacian(w) - drag w + f,   f = -A cos(k_f y),   (x, y) in [0, 2 pi)^2

with the velocity from the stream function: -Laplacian(psi) = w (psi_hat = w_hat / |k|^2),
u = psi_y, v = -psi_x. (DiffusionPDE's data: Re = 1000, drag = 0.1, A = 4, k_f = 4, frames
dt = 1/32 apart, 256 x 256.) A sample is three consecutive frames w(t), w(t + dt), w(t + 2 dt)
as channels ``(w0, w1, w2)``; rows are y, columns x, nodes 2 pi j / R.

Generation. Samples come in groups of `samples_per_group` (G) windows of one trajectory:
sample i is window i % G of trajectory g = i // G, whose random initial vorticity (a GRF,
alpha = 2.5, tau = 7, as in FNO's Navier-Stokes data) is drawn with the generator of the
group's first sample, SeedSequence([seed, g G]); so sample i depends only on (seed, i), and a
request that starts inside a trajectory recomputes it from its start. Each trajectory is spun
up for ``spinup`` time units on the output grid (R points, 2/3-dealiased), zero-padded onto a
grid ``refine`` times finer, run one more time unit there, and then recorded: window m starts
``m * stride`` frames later. Frames are the fine field injected onto the output nodes.

Time stepping: ETDRK4 (Kassam & Trefethen 2005; drag and viscosity integrated exactly; the
constant forcing sits in the nonlinear part, which ETDRK4 also integrates exactly) with
dt = dt_frame / n, the smallest n with U_L k_max dt <= ``courant``, where k_max = N / 3 is the
largest retained wavenumber and U_L = A / (k_f (k_f^2 / Re + drag)) the laminar peak speed
(at Re = 50 the flow's peak speed is ~3.1 vs U_L = 2.4; Courant 3.5 blows up). The solver runs
in single precision (complex64 FFTs, 1.7x faster): closed-form solutions are reproduced to
~1e-6 relative and the data floor is unchanged (it is set by the residual's own truncation).
Trajectories are integrated in batches, bitwise independent of the batch's composition (the
flow is chaotic, so anything less would break the per-sample seeding).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pirf.errors import ConfigError, ShapeError
from pirf.pdes import random_fields as rf
from pirf.pdes.base import PDE, ConditioningField, Grid
from pirf.pdes.operators import spectral_derivatives
from pirf.pdes.registry import register
from pirf.pdes.spectral import ETDRK4

if TYPE_CHECKING:
    from torch import Tensor

_BATCH = 8  # trajectories integrated together (numpy FFTs gain little from larger batches)
_FINE_SETTLE = 1.0  # time units on the fine grid before the first frame


def _resample(w_hat: np.ndarray, n_out: int) -> np.ndarray:
    """rfft2 spectrum of an n x n field -> that of its trig interpolant on n_out x n_out.

    Keeps the modes |k| < min(n, n_out) / 2 per axis (Nyquist modes dropped): exact band-limited
    interpolation (n_out > n) or spectral truncation (n_out < n).
    """
    n = w_hat.shape[-2]
    keep = (min(n, n_out) + 1) // 2  # modes 0 .. keep-1 and -(keep-1) .. -1
    out = np.zeros((*w_hat.shape[:-2], n_out, n_out // 2 + 1), dtype=np.complex128)
    out[..., :keep, :keep] = w_hat[..., :keep, :keep]
    out[..., n_out - keep + 1 :, :keep] = w_hat[..., n - keep + 1 :, :keep]
    return out * (n_out / n) ** 2


class _VorticityStepper:
    """ETDRK4 for the pseudo-spectral vorticity equation on an n x n grid (rfft2 layout)."""

    def __init__(self, pde: Kolmogorov, n: int) -> None:
        self.n = n
        self.kx = np.fft.rfftfreq(n, d=1.0 / n)[None, :]
        self.ky = np.fft.fftfreq(n, d=1.0 / n)[:, None]
        k2 = self.kx**2 + self.ky**2
        self.inv_k2 = np.where(k2 > 0, 1.0 / np.where(k2 > 0, k2, 1.0), 0.0)
        self.dealias = (np.abs(self.ky) < n / 3) & (self.kx < n / 3)  # Orszag's 2/3 rule
        y = 2 * math.pi * np.arange(n) / n
        forcing = np.broadcast_to(pde.forcing(y)[:, None], (n, n))
        self.f_hat = np.fft.rfft2(forcing)
        k_max = n / 3
        self.steps_per_frame = max(
            1, math.ceil(pde.dt_frame * pde.laminar_speed * k_max / pde.courant - 1e-9)
        )
        coeffs = ETDRK4.build(-k2 / pde.re - pde.drag, pde.dt_frame / self.steps_per_frame)
        self.etdrk4 = dataclasses.replace(
            coeffs, **{f: getattr(coeffs, f).astype(np.float32) for f in ("e", "e2", "q", "f1", "f2", "f3")}
        )
        self.ikx = (1j * self.kx).astype(np.complex64)
        self.iky = (1j * self.ky).astype(np.complex64)
        self.inv_k2 = self.inv_k2.astype(np.float32)
        self.f_hat = self.f_hat.astype(np.complex64)

    def nonlinear(self, w_hat: np.ndarray) -> np.ndarray:
        """-(u w_x + v w_y), dealiased, plus the forcing."""
        s = (self.n, self.n)
        psi_hat = w_hat * self.inv_k2
        u = np.fft.irfft2(self.iky * psi_hat, s=s)
        v = np.fft.irfft2(-self.ikx * psi_hat, s=s)
        w_x = np.fft.irfft2(self.ikx * w_hat, s=s)
        w_y = np.fft.irfft2(self.iky * w_hat, s=s)
        return self.f_hat - self.dealias * np.fft.rfft2(u * w_x + v * w_y)

    def advance(self, w_hat: np.ndarray, frames: int) -> np.ndarray:
        """Integrate ``frames * dt_frame`` time units."""
        w_hat = w_hat.astype(np.complex64)
        for _ in range(frames * self.steps_per_frame):
            w_hat = self.etdrk4.step(w_hat, self.nonlinear)
        return w_hat


@dataclass(frozen=True)
class Kolmogorov(PDE):
    """Kolmogorov flow (vorticity form) on [0, 2 pi)^2, samples of three frames ``(w0, w1, w2)``.

    Parameters: ``re``, ``drag``, forcing ``forcing_amp`` A and ``forcing_wavenumber`` k_f
    (f = -A cos(k_f y)); ``dt_frame`` between frames; solver ``refine`` (fine grid = refine * R)
    and ``courant`` (time step, see module docstring); ``spinup`` (time units before the first
    frame) and ``stride`` (frames between the windows of one trajectory).

    Default ``re = 50`` (the paper's 1000 needs 256 x 256): at the CPU default 64 x 64 the flow
    after spin-up is time-dependent and far from the laminar shear (tested), and resolved: the
    enstrophy beyond the 2/3 cutoff is a negligible share. The data floor grows steeply with Re
    at 64, where the residual's product u . grad w aliases, and at the paper's Re = 1000 on 128
    it is of the order of Var w (the central time difference over dt_frame = 1/32 is
    under-resolved as well): ``python benchmarks/physics_checks.py`` measures both.
    ``spinup = 20`` time units lets energy and enstrophy become stationary; windows ``stride =
    8`` frames (1/4 time unit) apart, 32 per trajectory (~8 time units).
    The paper setting: ``pirf.pdes.get("kolmogorov", re=1000)`` at resolution 128.
    """

    name: ClassVar[str] = "kolmogorov"
    fields: ClassVar[tuple[str, ...]] = ("w0", "w1", "w2")
    boundary: ClassVar = "periodic"
    description: ClassVar[str] = (
        "w_t + u.grad w = Lap(w)/Re - 0.1 w - 4 cos(4y) on [0,2pi)^2; three frames dt = 1/32 apart"
    )
    solver: ClassVar[str] = "pseudo-spectral (2/3-dealiased) on a refined grid, ETDRK4 in time"
    default_resolution: ClassVar[int] = 64
    paper_resolution: ClassVar[int] = 128
    paper_params: ClassVar[dict] = {"re": 1000.0}  # DiffusionPDE / PIRF (unresolved at 128: docs/pdes.md)
    min_resolution: ClassVar[int] = 16
    samples_per_group: ClassVar[int] = 32
    ic_alpha: ClassVar[float] = 2.5
    ic_tau: ClassVar[float] = 7.0
    length: ClassVar[float] = 2 * math.pi

    re: float = 50.0
    drag: float = 0.1
    forcing_amp: float = 4.0
    forcing_wavenumber: int = 4
    dt_frame: float = 1.0 / 32
    refine: int = 2
    spinup: float = 20.0
    stride: int = 8
    courant: float = 2.5

    def __post_init__(self) -> None:
        positive = {"re": self.re, "dt_frame": self.dt_frame, "courant": self.courant}
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"kolmogorov: {key} = {value} must be positive", f"give {key} > 0")
        if self.drag < 0 or self.spinup < 0:
            raise ConfigError("kolmogorov: drag and spinup must be non-negative", "give drag, spinup >= 0")
        for key in ("refine", "stride", "forcing_wavenumber"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"kolmogorov: {key} = {value!r} must be a positive integer", f"give e.g. {key}=1"
                )

    @property
    def laminar_speed(self) -> float:
        """Peak speed of the laminar state (a velocity scale for the time step)."""
        k = self.forcing_wavenumber
        return abs(self.forcing_amp) / (k * (k**2 / self.re + self.drag)) if self.forcing_amp else 1.0

    def forcing(self, y):
        """f(y) = -A cos(k_f y) (numpy or torch)."""
        import torch

        cos = torch.cos if isinstance(y, torch.Tensor) else np.cos
        return -self.forcing_amp * cos(self.forcing_wavenumber * y)

    def laminar(self, resolution: int) -> np.ndarray:
        """The steady laminar state w_L(y) = -A cos(k_f y) / (k_f^2 / Re + drag), ``[R, R]``."""
        y = self.grid(resolution).coords[0]
        w = self.forcing(y) / (self.forcing_wavenumber**2 / self.re + self.drag)
        return np.broadcast_to(w[:, None], (resolution, resolution)).copy()

    def conditioning(self, resolution: int) -> tuple[ConditioningField, ...]:
        """sin(k_f y) and cos(k_f y) on the grid (rows are y = i 2 pi / R, constant along x): the
        forcing's phase, which a periodic, shift-equivariant U-Net cannot otherwise know. Without
        them a model draws flows at any shift along y, half of them half a forcing period off."""
        y = self.grid(resolution).coords[0]
        k = self.forcing_wavenumber
        fields = []
        for name, fn in (("sin", np.sin), ("cos", np.cos)):
            values = np.broadcast_to(fn(k * y)[:, None], (resolution, resolution)).astype(np.float32)
            formula = f"{name}({k} * y) with y = 2 pi i / R on row i (constant along columns)"
            fields.append(ConditioningField(f"{name}({k}y)", formula, values.copy()))
        return tuple(fields)

    def grid(self, resolution: int) -> Grid:
        nodes = np.arange(resolution) * self.length / resolution
        h = self.length / resolution
        return Grid(resolution, ("y", "x"), (h, h), "periodic", (nodes, nodes))

    # -- solver ----------------------------------------------------------------------------
    def trajectory(self, w0: np.ndarray, frames: Sequence[int]) -> np.ndarray:
        """Frames ``[B, len(frames), R, R]`` (float32) at t = k * dt_frame (k in ``frames``, ascending) of
        the flow from ``w0 [B, R, R]``, integrated on the grid ``refine`` times finer (w0 read as
        its trigonometric interpolant, Nyquist modes dropped) and injected onto the R grid."""
        w0 = np.asarray(w0, dtype=np.float64)
        if w0.ndim != 3 or w0.shape[1] != w0.shape[2]:
            raise ShapeError(f"kolmogorov: initial vorticity has shape {w0.shape}, expected [B, R, R]")
        r = w0.shape[-1]
        fine = _VorticityStepper(self, self.refine * r)
        return self._record(fine, _resample(np.fft.rfft2(w0), fine.n), frames, r)

    def _record(
        self, fine: _VorticityStepper, w_hat: np.ndarray, frames: Sequence[int], r: int
    ) -> np.ndarray:
        out = np.empty((w_hat.shape[0], len(frames), r, r), dtype=np.float32)
        now = 0
        for j, k in enumerate(frames):
            w_hat = fine.advance(w_hat, k - now)
            now = k
            out[:, j] = np.fft.irfft2(w_hat, s=(fine.n, fine.n))[:, :: self.refine, :: self.refine]
        if not np.isfinite(out).all():
            raise ConfigError("kolmogorov: the solver produced non-finite values", "lower `courant`")
        return out

    def solve_samples(self, rngs: Sequence[np.random.Generator], resolution: int, start: int) -> np.ndarray:
        """Samples start .. start+len(rngs)-1 with ``start`` a multiple of `samples_per_group`:
        trajectory j is seeded by ``rngs[j * G]``, the generator of its first sample."""
        g = self.samples_per_group
        if start % g:
            raise ConfigError(
                f"kolmogorov: solve_samples needs a group-aligned start, got {start}", "call generate()"
            )
        counts = [min(g, len(rngs) - i) for i in range(0, len(rngs), g)]  # windows per trajectory
        coarse = _VorticityStepper(self, resolution)
        fine = _VorticityStepper(self, self.refine * resolution)
        spin_frames = round(self.spinup / self.dt_frame)
        settle_frames = round(_FINE_SETTLE / self.dt_frame)
        out = []
        for b in range(0, len(counts), _BATCH):
            batch = counts[b : b + _BATCH]
            group_rngs = [rngs[(b + j) * g] for j in range(len(batch))]
            w0 = rf.periodic_grf_2d(group_rngs, resolution, self.ic_alpha, self.ic_tau, length=self.length)
            w_hat = _resample(coarse.advance(np.fft.rfft2(w0), spin_frames), fine.n)
            w_hat = fine.advance(w_hat, settle_frames)
            starts = [m * self.stride for m in range(max(batch))]
            needed = sorted({s + d for s in starts for d in range(3)})
            frames = self._record(fine, w_hat, needed, resolution)
            index = {k: i for i, k in enumerate(needed)}
            for j, count in enumerate(batch):
                for s in starts[:count]:
                    out.append(frames[j, [index[s], index[s + 1], index[s + 2]]])
        return np.stack(out)

    def generate(self, n: int, resolution: int | None = None, seed: int = 0, start: int = 0) -> np.ndarray:
        """Samples ``start .. start+n-1``: float32 ``[n, 3, R, R]``; sample i depends only on (seed, i).

        A request that starts inside a trajectory recomputes that trajectory from its start.
        """
        first = start - start % self.samples_per_group if start > 0 and n > 0 else start
        return super().generate(n + start - first, resolution, seed, first)[start - first :]

    # -- residual --------------------------------------------------------------------------
    def residual(self, x: Tensor) -> Tensor:
        """Vorticity-equation residual on the middle frame: ``[B, 3, R, R] -> [B, R, R]``.

        (w2 - w0) / (2 dt_frame) + u1 w1_x + v1 w1_y - Lap(w1) / Re + drag w1 - f: central time
        difference (2nd order in dt_frame), spectral space derivatives (exact for band-limited
        fields; no dealiasing), velocity from the stream function of w1.
        """
        import torch

        self.check_fields(x)
        w0, w1, w2 = x[:, 0], x[:, 1], x[:, 2]
        d = spectral_derivatives(w1, self.length)
        r = w1.shape[-1]
        y = torch.arange(r, device=x.device, dtype=x.dtype) * (self.length / r)
        w_t = (w2 - w0) / (2 * self.dt_frame)
        return (
            w_t
            + d["u"] * d["w_x"]
            + d["v"] * d["w_y"]
            - d["lap"] / self.re
            + self.drag * w1
            - self.forcing(y)[:, None]
        )


register(Kolmogorov)

__all__ = ["Kolmogorov"]
