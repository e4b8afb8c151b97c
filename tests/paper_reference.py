"""An independent numpy re-implementation of the residuals in PIRF's public code (github
mingze-yuan/PIRF, reward/pde.py and reward/grad_utils.py; arXiv 2509.20570), written from their
definitions as 1-D difference matrices (and, for Kolmogorov, numpy FFTs), so that it shares no
code with ``pirf.pdes.*_paper``. Inputs are physical fields ``[B, C, R, R]`` in the authors'
orientation; outputs ``[B, R, R]`` float64. Used by tests/test_paper.py and
benchmarks/paper_parity.py.
"""

from __future__ import annotations

import numpy as np


def _first_derivative_matrix(n: int, h: float) -> np.ndarray:
    """findiff's d/dx with acc=2 on n points: central rows, one-sided 3-point first/last rows."""
    m = np.zeros((n, n))
    for i in range(1, n - 1):
        m[i, i - 1], m[i, i + 1] = -0.5, 0.5
    m[0, :3] = [-1.5, 2.0, -0.5]
    m[-1, -3:] = [0.5, -2.0, 1.5]
    return m / h


def _second_derivative_matrix(n: int, h: float) -> np.ndarray:
    """findiff's d2/dx2 with acc=2: central rows, one-sided 4-point first/last rows."""
    m = np.zeros((n, n))
    for i in range(1, n - 1):
        m[i, i - 1 : i + 2] = [1.0, -2.0, 1.0]
    m[0, :4] = [2.0, -5.0, 4.0, -1.0]
    m[-1, -4:] = [-1.0, 4.0, -5.0, 2.0]
    return m / h**2


def _replicate_central_matrix(n: int, h: float) -> np.ndarray:
    """(v[i+1] - v[i-1]) / 2h of the replicate-padded vector (v[-1] = v[0], v[n] = v[n-1])."""
    m = np.zeros((n, n))
    for i in range(n):
        m[i, min(i + 1, n - 1)] += 0.5
        m[i, max(i - 1, 0)] -= 0.5
    return m / h


def _replicate_second_matrix(n: int, h: float) -> np.ndarray:
    """v[i-1] - 2 v[i] + v[i+1] of the replicate-padded vector, over h^2."""
    m = -2.0 * np.eye(n)
    for i in range(n):
        m[i, max(i - 1, 0)] += 1.0
        m[i, min(i + 1, n - 1)] += 1.0
    return m / h**2


def _along_rows(m: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.einsum("ij,bjk->bik", m, u)


def _along_columns(m: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.einsum("kj,bij->bik", m, u)


def darcy(x: np.ndarray, forcing: float = 1.0) -> np.ndarray:
    """``DarcyResidual`` (pixels_at_boundary=False, fd_acc=2): h = 1/R, all pixels."""
    a, u = np.asarray(x[:, 0], np.float64), np.asarray(x[:, 1], np.float64)
    n = a.shape[-1]
    d1, d2 = _first_derivative_matrix(n, 1.0 / n), _second_derivative_matrix(n, 1.0 / n)
    rows = -a * _along_rows(d2, u) - _along_rows(d1, a) * _along_rows(d1, u)
    cols = -a * _along_columns(d2, u) - _along_columns(d1, a) * _along_columns(d1, u)
    return rows + cols - forcing


def elliptic(x: np.ndarray, k: float = 0.0) -> np.ndarray:
    """``PoissonResidual`` (k = 0) / ``HelmholtzResidual`` (k = 1): replicate-padded 5-point
    Laplacian, h = 1/(R-1), + k^2 u - f on all pixels."""
    f, u = np.asarray(x[:, 0], np.float64), np.asarray(x[:, 1], np.float64)
    n = u.shape[-1]
    lap = _replicate_second_matrix(n, 1.0 / (n - 1))
    return _along_rows(lap, u) + _along_columns(lap, u) + k**2 * u - f


def burgers(x: np.ndarray, nu: float = 0.01) -> np.ndarray:
    """``BurgersResidual``: dt = dx = 1/R, replicate padding, u_xx as the derivative of u_x."""
    u = np.asarray(x[:, 0], np.float64)
    n = u.shape[-1]
    g = _replicate_central_matrix(n, 1.0 / n)
    u_x = _along_columns(g, u)
    return _along_rows(g, u) + u * u_x - nu * _along_columns(g, u_x)


def kolmogorov(x: np.ndarray, re: float = 1000.0, dt: float = 1 / 32) -> np.ndarray:
    """``KolmogorovResidual``: rows = x, columns = y, forcing -4 cos(4 y), drag 0.1, on the middle frame."""
    w = np.asarray(x, np.float64)
    n = w.shape[-1]
    kk = np.concatenate([np.arange(0, n // 2), np.arange(-n // 2, 0)]).astype(np.float64)
    k_x, k_y = np.meshgrid(kk, kk, indexing="ij")  # k_x varies along rows, k_y along columns
    lap = k_x**2 + k_y**2
    lap[0, 0] = 1.0
    w_h = np.fft.fft2(w[:, 1])
    psi_h = w_h / lap

    def half(z: np.ndarray) -> np.ndarray:
        return np.fft.irfft2(z[..., : n // 2 + 1], s=(n, n))

    u, v = half(1j * k_y * psi_h), half(-1j * k_x * psi_h)
    w_x, w_y, w_lap = half(1j * k_x * w_h), half(1j * k_y * w_h), half(-lap * w_h)
    nodes = np.linspace(0, 2 * np.pi, n + 1)[:-1]
    _, y = np.meshgrid(nodes, nodes, indexing="ij")
    w_t = (w[:, 2] - w[:, 0]) / (2 * dt)
    return w_t + u * w_x + v * w_y - w_lap / re + 0.1 * w[:, 1] + 4 * np.cos(4 * y)


REFERENCE = {
    "darcy-paper": darcy,
    "poisson-paper": elliptic,
    "helmholtz-paper": lambda x: elliptic(x, k=1.0),
    "burgers-paper": burgers,
    "kolmogorov-paper": kolmogorov,
}
"""The authors' residual of each ``-paper`` benchmark at its default parameters."""


def interior_two_in(r: np.ndarray) -> np.ndarray:
    """The pixels two or more away from every edge: ``[B, R-4, R-4]``."""
    return r[..., 2:-2, 2:-2]
