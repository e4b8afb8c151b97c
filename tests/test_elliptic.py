"""Poisson and Helmholtz: spectral solver against closed forms, residual order, floor, errors."""

import math

import numpy as np
import pytest
import torch

import pirf.pdes as pdes
from conftest import convergence_order
from pirf.errors import ConfigError, NonFiniteError, ShapeError

NAMES = ["poisson", "helmholtz"]


def _manufactured(pde, n: int) -> torch.Tensor:
    """u = sin(pi x) sin(2 pi y) e^{x y} (zero on the boundary) and f = Lap u + k^2 u, exact."""
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    y, x = torch.meshgrid(x, x, indexing="ij")
    s, e = torch.sin(math.pi * x) * torch.sin(2 * math.pi * y), torch.exp(x * y)
    u = s * e
    u_x = math.pi * torch.cos(math.pi * x) * torch.sin(2 * math.pi * y) * e + y * u
    u_y = 2 * math.pi * torch.sin(math.pi * x) * torch.cos(2 * math.pi * y) * e + x * u
    u_xx = -(math.pi**2) * u + 2 * y * (u_x - y * u) + y**2 * u
    u_yy = -4 * math.pi**2 * u + 2 * x * (u_y - x * u) + x**2 * u
    f = u_xx + u_yy + pde.k_squared * u
    return torch.stack([f, u])[None]


@pytest.mark.parametrize("name", NAMES)
def test_residual_second_order_on_manufactured_solution(name):
    pde = pdes.get(name)
    resolutions = [17, 33, 65]
    errors = [pde.residual(_manufactured(pde, n)).abs().max().item() for n in resolutions]
    assert convergence_order(errors, resolutions) == pytest.approx(2.0, abs=0.15)


@pytest.mark.parametrize("name", NAMES)
def test_solver_matches_sine_mode_closed_form(name):
    pde = pdes.get(name)
    coeffs = np.zeros((1, 5, 5))
    coeffs[0, 2, 4] = 1.0  # f = sin(3 pi y) sin(5 pi x)
    x = pde.generate(0, 33)  # empty, but exercises the path
    assert x.shape == (0, 2, 33, 33)
    fields = pde.solve_sine_series(coeffs, 33)
    grid = np.linspace(0, 1, 33)
    f = np.sin(3 * math.pi * grid)[:, None] * np.sin(5 * math.pi * grid)[None, :]
    u = f / (pde.k_squared - 34 * math.pi**2)
    np.testing.assert_allclose(fields[0, 0], f, atol=1e-13)
    np.testing.assert_allclose(fields[0, 1], u, atol=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_samples_sit_at_floor_far_below_perturbed(name):
    """A 1% pixel-level error in u (the size of a good generative model's error) raises the
    residual by orders of magnitude over the data's own floor."""
    pde = pdes.get(name)
    x = torch.from_numpy(pde.generate(16, 32, seed=1)).double()
    base = pde.residual_stats(x)
    assert base["boundary"]["mse"].max() < 1e-20
    perturbed = x.clone()
    noise = torch.randn(x[:, 1].shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    perturbed[:, 1] += 0.01 * x[:, 1].std() * noise  # 1% of the channel's spread (its normalization scale)
    ratio = pde.residual_stats(perturbed)["interior"]["mse"] / base["interior"]["mse"]
    assert ratio.median() > 100 and ratio.min() > 10, ratio


def test_floor_decays_with_resolution_at_the_rate_the_source_spectrum_allows():
    """f ~ GRF(alpha=2) in 2-D keeps energy ~ k^-3 per shell up to the grid's Nyquist, so the
    5-point stencil's error (pi k h)^2 / 12 leaves an RMS floor ~ h: first order, not second."""
    pde = pdes.get("poisson")
    floors = [
        pde.residual_stats(torch.from_numpy(pde.generate(32, n, seed=0)).double())["interior"]["mse"]
        .mean()
        .sqrt()
        .item()
        for n in (32, 64, 128)
    ]
    assert convergence_order(floors, [32, 64, 128]) == pytest.approx(1.0, abs=0.2)


def test_determinism_and_chunk_independence():
    pde = pdes.get("helmholtz")
    a = pde.generate(5, 16, seed=7)
    np.testing.assert_array_equal(a, pde.generate(5, 16, seed=7))
    np.testing.assert_array_equal(a[3:5], pde.generate(2, 16, seed=7, start=3))
    assert not np.array_equal(a, pde.generate(5, 16, seed=8))


def test_bad_input_errors_name_the_problem():
    pde = pdes.get("poisson")
    with pytest.raises(ShapeError, match=r"expected \[B, 2, H, W\]"):
        pde.residual(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ShapeError, match="square"):
        pde.residual(torch.zeros(2, 2, 16, 12))
    bad = torch.zeros(1, 2, 16, 16)
    bad[0, 1, 3, 3] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN"):
        pde.residual(bad)
    with pytest.raises(ConfigError, match="at least 8"):
        pde.generate(1, 4)
    with pytest.raises(ConfigError, match="resonance"):
        pdes.get("helmholtz", wavenumber=math.pi * math.sqrt(2))


def test_residual_is_differentiable_in_both_channels():
    pde = pdes.get("helmholtz")
    x = torch.from_numpy(pde.generate(2, 16)).double().requires_grad_(True)
    pde.residual(x).pow(2).mean().backward()
    assert x.grad is not None and x.grad[:, 0].abs().sum() > 0 and x.grad[:, 1].abs().sum() > 0
