"""Differentiable, batched finite-difference and spectral derivative operators (torch).

All operators act on the last two dims ``[..., H, W]`` (rows = y or t, columns = x) and work
in physical units given the grid spacing. Orders are stated per operator and measured in the
tests on manufactured solutions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


def laplacian_5pt(u: Tensor, dy: float, dx: float) -> Tensor:
    """Five-point Laplacian on interior nodes, 2nd order: ``[..., H, W] -> [..., H-2, W-2]``.

    (u[i+1,j] - 2u[i,j] + u[i-1,j]) / dy^2 + (u[i,j+1] - 2u[i,j] + u[i,j-1]) / dx^2.
    """
    c = u[..., 1:-1, 1:-1]
    d2y = (u[..., 2:, 1:-1] - 2 * c + u[..., :-2, 1:-1]) / dy**2
    d2x = (u[..., 1:-1, 2:] - 2 * c + u[..., 1:-1, :-2]) / dx**2
    return d2y + d2x


def embed_interior(interior: Tensor, ring: Tensor) -> Tensor:
    """Full ``[..., H, W]`` map: ``interior`` ``[..., H-2, W-2]`` inside, ``ring``'s values on the edge."""
    import torch
    import torch.nn.functional as F

    padded = F.pad(interior, (1, 1, 1, 1))
    edge = torch.ones_like(ring, dtype=torch.bool)
    edge[..., 1:-1, 1:-1] = False
    return torch.where(edge, ring, padded)


def periodic_diff(u: Tensor, h: float, dim: int = -1) -> Tensor:
    """First derivative, central, periodic along ``dim``, 2nd order: (u[j+1] - u[j-1]) / 2h."""
    import torch

    return (torch.roll(u, -1, dims=dim) - torch.roll(u, 1, dims=dim)) / (2 * h)


def periodic_diff2(u: Tensor, h: float, dim: int = -1) -> Tensor:
    """Second derivative, central, periodic along ``dim``, 2nd order: (u[j+1] - 2u[j] + u[j-1]) / h^2."""
    import torch

    return (torch.roll(u, -1, dims=dim) - 2 * u + torch.roll(u, 1, dims=dim)) / h**2


def diff_one_sided_edges(u: Tensor, h: float, dim: int = -2) -> Tensor:
    """First derivative along a non-periodic ``dim``, 2nd order everywhere.

    Central (u[j+1] - u[j-1]) / 2h inside; at the two edges the one-sided 3-point formulas
    (-3u[0] + 4u[1] - u[2]) / 2h and (3u[-1] - 4u[-2] + u[-3]) / 2h.
    """
    import torch

    u = u.movedim(dim, -1)
    inner = (u[..., 2:] - u[..., :-2]) / (2 * h)
    first = (-3 * u[..., :1] + 4 * u[..., 1:2] - u[..., 2:3]) / (2 * h)
    last = (3 * u[..., -1:] - 4 * u[..., -2:-1] + u[..., -3:-2]) / (2 * h)
    return torch.cat([first, inner, last], dim=-1).movedim(-1, dim)


def wavenumbers(n: int, length: float, *, rfft: bool = False, device=None, dtype=None) -> Tensor:
    """Angular wavenumbers 2 pi k / L of an ``n``-point periodic grid (``rfft``: the half spectrum;
    ``dtype`` default float64)."""
    import torch

    dtype = torch.float64 if dtype is None else dtype
    d = length / n
    freq = torch.fft.rfftfreq if rfft else torch.fft.fftfreq
    return 2 * math.pi * freq(n, d=d, dtype=dtype, device=device)


def spectral_derivatives(w: Tensor, length: float) -> dict[str, Tensor]:
    """Spectral derivatives of a periodic field ``w [..., N, N]`` on a square of side ``length``.

    Returns ``w_x, w_y, lap`` (the Laplacian) and the stream function ``psi`` with
    ``-lap psi = w`` (mean mode set to zero), its velocity ``u = psi_y, v = -psi_x``.
    Exact for band-limited fields; the Nyquist mode of odd derivatives is zeroed.
    """
    import torch

    n = w.shape[-1]
    real = w.dtype if w.dtype.is_floating_point else torch.float64
    ky = wavenumbers(n, length, device=w.device, dtype=real)[:, None]
    kx = wavenumbers(n, length, rfft=True, device=w.device, dtype=real)[None, :]
    kx_odd = kx.clone()
    ky_odd = ky.clone()
    if n % 2 == 0:  # the Nyquist mode has no well-defined sign for odd derivatives
        kx_odd[:, -1] = 0
        ky_odd[n // 2, :] = 0
    k2 = kx**2 + ky**2
    w_hat = torch.fft.rfft2(w)
    inv_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
    psi_hat = w_hat * inv_k2

    def back(z: Tensor) -> Tensor:
        return torch.fft.irfft2(z, s=w.shape[-2:])

    return {
        "w_x": back(1j * kx_odd * w_hat),
        "w_y": back(1j * ky_odd * w_hat),
        "lap": back(-k2 * w_hat),
        "psi": back(psi_hat),
        "u": back(1j * ky_odd * psi_hat),
        "v": back(-1j * kx_odd * psi_hat),
    }
