"""Gaussian random fields have the covariance sigma^2 (-Laplacian + tau^2)^(-alpha) they claim."""

import math

import numpy as np
import pytest

from pirf.pdes import random_fields as rf


def _rngs(n: int, offset: int = 0):
    return [np.random.default_rng(i + offset) for i in range(n)]


def test_periodic_1d_pointwise_variance_matches_spectrum():
    n, alpha, tau, sigma = 64, 2.5, 7.0, 49.0
    u = rf.periodic_grf_1d(_rngs(4000), n, alpha, tau, sigma)
    k = np.fft.fftfreq(n, 1 / n)
    expected = (sigma**2 * ((2 * math.pi * k) ** 2 + tau**2) ** (-alpha)).sum()
    assert u.var() == pytest.approx(expected, rel=0.05)


def test_periodic_2d_mode_variance():
    n, alpha, tau = 16, 2.0, 3.0
    u = rf.periodic_grf_2d(_rngs(3000), n, alpha, tau, length=2 * math.pi)
    u_hat = np.fft.fft2(u, norm="forward")
    c2 = tau ** (2 * (alpha - 1)) * (1.0**2 + 0.0 + tau**2) ** (-alpha)  # mode (0, 1): |k| = 1
    assert np.mean(np.abs(u_hat[:, 0, 1]) ** 2) == pytest.approx(c2, rel=0.1)
    assert np.abs(u.mean(axis=(1, 2))).max() < 1e-12  # mean-zero


def test_dirichlet_field_vanishes_on_boundary_and_has_stated_variance():
    k_modes, alpha, tau = 24, 2.0, 3.0
    coeffs = rf.dirichlet_coefficients(_rngs(2000), k_modes, alpha, tau)
    x = np.linspace(0, 1, 33)
    basis = rf.sine_basis(k_modes, x)
    f = rf.evaluate_series(coeffs, basis, basis)
    assert np.abs(f[:, 0]).max() < 1e-12 and np.abs(f[:, :, -1]).max() < 1e-12
    # Var f(1/2, 1/2) = sum_k sigma^2 (pi^2 |k|^2 + tau^2)^-alpha * 4 sin^2 sin^2
    k = np.arange(1, k_modes + 1)
    lam = math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2)
    s = np.sin(math.pi * k / 2) ** 2
    expected = (tau ** (2 * (alpha - 1)) * (lam + tau**2) ** (-alpha) * 4 * s[:, None] * s[None, :]).sum()
    assert f[:, 16, 16].var() == pytest.approx(expected, rel=0.08)


def test_series_on_refined_grid_is_the_same_field():
    coeffs = rf.neumann_coefficients(_rngs(3), 9, 2.0, 3.0)
    coarse, fine = np.linspace(0, 1, 9), np.linspace(0, 1, 33)
    f_c = rf.evaluate_series(coeffs, rf.cosine_basis(9, coarse), rf.cosine_basis(9, coarse))
    f_f = rf.evaluate_series(coeffs, rf.cosine_basis(9, fine), rf.cosine_basis(9, fine))
    np.testing.assert_allclose(f_f[:, ::4, ::4], f_c, atol=1e-12)
    assert np.abs(f_c.mean()) < 1.0 and coeffs[:, 0, 0].tolist() == [0, 0, 0]
