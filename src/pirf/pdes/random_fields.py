"""Gaussian random fields with covariance sigma^2 (-Laplacian + tau^2)^(-alpha) (numpy).

The field is a series over the Laplacian's eigenfunctions phi_k (eigenvalue lambda_k) with
independent standard-normal weights xi_k:

    f(x) = sum_k  sigma (lambda_k + tau^2)^(-alpha/2)  xi_k  phi_k(x),

the construction of the FNO / DiffusionPDE data generators (Li et al. 2021; Shu et al. 2024),
with orthonormal eigenfunctions so that the covariance operator is exactly the one above. The
default amplitude is ``sigma = tau^(alpha - d/2)`` (d the dimension), their convention.

Series are evaluated by explicit basis matrices, so a field drawn with ``K`` modes can be
sampled on any grid (the same continuous field on a coarse and a refined grid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def default_sigma(alpha: float, tau: float, dim: int) -> float:
    """FNO's amplitude convention sigma = tau^(alpha - d/2)."""
    return tau ** (alpha - dim / 2)


def _spectrum(eigenvalues: np.ndarray, alpha: float, tau: float, sigma: float) -> np.ndarray:
    return sigma * (eigenvalues + tau**2) ** (-alpha / 2)


def _normal_weights(rngs: Sequence[np.random.Generator], shape: tuple[int, ...]) -> np.ndarray:
    return np.stack([rng.standard_normal(shape) for rng in rngs])


def dirichlet_coefficients(
    rngs: Sequence[np.random.Generator], n_modes: int, alpha: float, tau: float, sigma: float | None = None
) -> np.ndarray:
    """Sine-series coefficients ``[B, K, K]`` (modes k = 1..K per axis) of a GRF on (0,1)^2 with
    zero Dirichlet boundary values: phi_k = 2 sin(pi k1 y) sin(pi k2 x), lambda_k = pi^2 |k|^2."""
    sigma = default_sigma(alpha, tau, 2) if sigma is None else sigma
    k = np.arange(1, n_modes + 1)
    lam = math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2)
    return 2.0 * _spectrum(lam, alpha, tau, sigma) * _normal_weights(rngs, (n_modes, n_modes))


def neumann_coefficients(
    rngs: Sequence[np.random.Generator], n_modes: int, alpha: float, tau: float, sigma: float | None = None
) -> np.ndarray:
    """Cosine-series coefficients ``[B, K, K]`` (modes k = 0..K-1) of a mean-zero GRF on (0,1)^2
    with zero-flux boundaries: phi_k = c_k1 c_k2 cos(pi k1 y) cos(pi k2 x), c_0 = 1, c_k = sqrt 2.
    The constant mode is dropped (mean-zero field, as in the Darcy generators of FNO)."""
    sigma = default_sigma(alpha, tau, 2) if sigma is None else sigma
    k = np.arange(n_modes)
    lam = math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2)
    norm = np.where(k == 0, 1.0, math.sqrt(2.0))
    coeff = _spectrum(lam, alpha, tau, sigma) * norm[:, None] * norm[None, :]
    coeff[0, 0] = 0.0
    return coeff * _normal_weights(rngs, (n_modes, n_modes))


def sine_basis(n_modes: int, points: np.ndarray) -> np.ndarray:
    """``[K, N]`` matrix sin(pi k x_n), k = 1..K."""
    return np.sin(math.pi * np.arange(1, n_modes + 1)[:, None] * points[None, :])


def cosine_basis(n_modes: int, points: np.ndarray) -> np.ndarray:
    """``[K, N]`` matrix cos(pi k x_n), k = 0..K-1."""
    return np.cos(math.pi * np.arange(n_modes)[:, None] * points[None, :])


def evaluate_series(coefficients: np.ndarray, basis_y: np.ndarray, basis_x: np.ndarray) -> np.ndarray:
    """Values ``[B, Ny, Nx]`` of sum_{k,l} c[b,k,l] basis_y[k, i] basis_x[l, j]."""
    return np.einsum("bkl,ki,lj->bij", coefficients, basis_y, basis_x, optimize=True)


def _colour_white_noise(
    rngs: Sequence[np.random.Generator], shape: tuple[int, ...], c: np.ndarray
) -> np.ndarray:
    """Real field with mode amplitudes ``c`` (rfft layout): white noise -> FFT -> multiply by c -> back.

    The orthonormal FFT of real unit white noise has Hermitian, unit-variance modes, so the
    field sum_k c_k W_k e^{ikx} has exactly Var u(x) = sum_k c_k^2.
    """
    axes = tuple(range(-len(shape), 0))
    w_hat = np.fft.rfftn(_normal_weights(rngs, shape), axes=axes, norm="ortho")
    return np.fft.irfftn(c * w_hat, s=shape, axes=axes, norm="forward")


def periodic_grf_1d(
    rngs: Sequence[np.random.Generator],
    n_points: int,
    alpha: float,
    tau: float,
    sigma: float | None = None,
    length: float = 1.0,
) -> np.ndarray:
    """Real GRF ``[B, N]`` on the periodic interval [0, L) at x_j = j L / N.

    u(x) = sum_{k in Z} c_k xi_k exp(2 pi i k x / L), c_k = sigma ((2 pi k / L)^2 + tau^2)^(-alpha/2),
    xi Hermitian complex normal of unit variance. All modes up to the grid's Nyquist are drawn.
    """
    sigma = default_sigma(alpha, tau, 1) if sigma is None else sigma
    k = np.fft.rfftfreq(n_points, d=1.0 / n_points)
    c = _spectrum((2 * math.pi * k / length) ** 2, alpha, tau, sigma)
    return _colour_white_noise(rngs, (n_points,), c)


def periodic_grf_2d(
    rngs: Sequence[np.random.Generator],
    n_points: int,
    alpha: float,
    tau: float,
    sigma: float | None = None,
    length: float = 1.0,
) -> np.ndarray:
    """Real mean-zero GRF ``[B, N, N]`` on the periodic square [0, L)^2 (same spectrum as 1-D)."""
    sigma = default_sigma(alpha, tau, 2) if sigma is None else sigma
    ky = np.fft.fftfreq(n_points, d=1.0 / n_points)[:, None]
    kx = np.fft.rfftfreq(n_points, d=1.0 / n_points)[None, :]
    c = _spectrum((2 * math.pi / length) ** 2 * (kx**2 + ky**2), alpha, tau, sigma)
    c[0, 0] = 0.0
    return _colour_white_noise(rngs, (n_points, n_points), c)
