"""Finite-difference and spectral operators converge at their stated orders."""

import math

import numpy as np
import pytest
import torch

from conftest import convergence_order
from pirf.pdes import operators as op


def _grid(n: int, periodic: bool = False):
    x = torch.arange(n, dtype=torch.float64) / n if periodic else torch.linspace(0, 1, n, dtype=torch.float64)
    return torch.meshgrid(x, x, indexing="ij")  # (y, x)


def test_laplacian_5pt_second_order():
    errors, resolutions = [], [17, 33, 65]
    for n in resolutions:
        y, x = _grid(n)
        u = torch.exp(x) * torch.sin(2 * y)
        exact = (1 - 4) * u
        h = 1 / (n - 1)
        errors.append((op.laplacian_5pt(u, h, h) - exact[1:-1, 1:-1]).abs().max().item())
    assert convergence_order(errors, resolutions) == pytest.approx(2.0, abs=0.15)


def test_periodic_differences_second_order():
    errs1, errs2, resolutions = [], [], [16, 32, 64]
    for n in resolutions:
        _, x = _grid(n, periodic=True)
        u = torch.sin(2 * math.pi * x) + 0.3 * torch.cos(4 * math.pi * x)
        du = 2 * math.pi * torch.cos(2 * math.pi * x) - 1.2 * math.pi * torch.sin(4 * math.pi * x)
        d2u = -4 * math.pi**2 * torch.sin(2 * math.pi * x) - 4.8 * math.pi**2 * torch.cos(4 * math.pi * x)
        errs1.append((op.periodic_diff(u, 1 / n) - du).abs().max().item())
        errs2.append((op.periodic_diff2(u, 1 / n) - d2u).abs().max().item())
    assert convergence_order(errs1, resolutions) == pytest.approx(2.0, abs=0.15)
    assert convergence_order(errs2, resolutions) == pytest.approx(2.0, abs=0.15)


def test_one_sided_edges_second_order_including_edges():
    errors, edge_errors, resolutions = [], [], [17, 33, 65]
    for n in resolutions:
        t, _ = _grid(n)
        u = torch.exp(-2 * t) * torch.cos(t)
        du = torch.exp(-2 * t) * (-2 * torch.cos(t) - torch.sin(t))
        err = (op.diff_one_sided_edges(u, 1 / (n - 1), dim=-2) - du).abs()
        errors.append(err.max().item())
        edge_errors.append(err[[0, -1]].max().item())
    assert convergence_order(errors, resolutions) == pytest.approx(2.0, abs=0.2)
    assert convergence_order(edge_errors, resolutions) == pytest.approx(2.0, abs=0.2)


def test_spectral_derivatives_exact_for_band_limited_field():
    n, length = 32, 2 * math.pi
    x = torch.arange(n, dtype=torch.float64) * length / n
    y, x = torch.meshgrid(x, x, indexing="ij")
    w = torch.cos(3 * x) * torch.sin(2 * y) + 0.5 * torch.sin(5 * y)
    d = op.spectral_derivatives(w[None], length)
    psi = torch.cos(3 * x) * torch.sin(2 * y) / 13 + 0.5 * torch.sin(5 * y) / 25  # -lap psi = w
    checks = {
        "w_x": -3 * torch.sin(3 * x) * torch.sin(2 * y),
        "w_y": 2 * torch.cos(3 * x) * torch.cos(2 * y) + 2.5 * torch.cos(5 * y),
        "lap": -13 * torch.cos(3 * x) * torch.sin(2 * y) - 12.5 * torch.sin(5 * y),
        "psi": psi,
        "u": 2 * torch.cos(3 * x) * torch.cos(2 * y) / 13 + 2.5 * torch.cos(5 * y) / 25,  # psi_y
        "v": 3 * torch.sin(3 * x) * torch.sin(2 * y) / 13,  # -psi_x
    }
    for key, exact in checks.items():
        np.testing.assert_allclose(d[key][0].numpy(), exact.numpy(), atol=1e-10, err_msg=key)


def test_embed_interior_keeps_ring_and_is_differentiable():
    ring = torch.randn(2, 6, 6, requires_grad=True)
    inner = torch.randn(2, 4, 4, requires_grad=True)
    full = op.embed_interior(inner, ring)
    assert torch.equal(full[:, 1:-1, 1:-1], inner)
    assert torch.equal(full[:, 0], ring[:, 0]) and torch.equal(full[:, :, -1], ring[:, :, -1])
    full.sum().backward()
    assert torch.all(inner.grad == 1)
    assert ring.grad[:, 1:-1, 1:-1].abs().sum() == 0 and ring.grad[:, 0].abs().min() == 1
