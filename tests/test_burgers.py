"""Burgers: solver against the Cole-Hopf closed form, residual order, data floor, seeds, errors."""

import math

import numpy as np
import pytest
import torch

import pirf.pdes as pdes
from conftest import convergence_order
from pirf.errors import ConfigError, NonFiniteError, ShapeError
from pirf.pdes import random_fields as rf
from pirf.pdes.base import sample_rngs
from pirf.pdes.burgers import Burgers


def smooth_noise(shape, sigma_px: float, seed: int = 0) -> torch.Tensor:
    """White noise blurred by a periodic Gaussian of ``sigma_px`` pixels, unit std per sample."""
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    k = torch.fft.fftfreq(shape[-1], dtype=torch.float64)
    blur = torch.exp(-2 * math.pi**2 * sigma_px**2 * (k[:, None] ** 2 + k[None, :] ** 2))
    e = torch.fft.ifft2(torch.fft.fft2(w) * blur).real
    return e / e.std(dim=(-2, -1), keepdim=True)


def test_registered_with_paper_setting():
    pde = pdes.get("burgers", nu=0.01)
    assert isinstance(pde, Burgers) and pde.params()["nu"] == 0.01
    assert pdes.get("burgers").nu == 0.02


def test_residual_second_order_on_cole_hopf_solution():
    """The Cole-Hopf solution is exact, so the residual is the stencil's truncation error:
    2nd order in the interior (central t and x) and on the time edges (one-sided 3-point)."""
    pde = pdes.get("burgers")
    resolutions = [64, 128, 256]
    errors = {"interior": [], "boundary": []}
    for n in resolutions:
        u = torch.from_numpy(pde.cole_hopf(n, a=2.0))[None, None]
        res = pde.residual(u)[0].abs()
        errors["interior"].append(res[1:-1].max().item())
        errors["boundary"].append(res[[0, -1]].max().item())
    for part, errs in errors.items():
        assert convergence_order(errs, resolutions) == pytest.approx(2.0, abs=0.1), (part, errs)


@pytest.mark.parametrize(("nu", "resolution"), [(0.02, 64), (0.01, 128)])
def test_solver_matches_cole_hopf(nu, resolution):
    pde = Burgers(nu=nu)
    exact = pde.cole_hopf(resolution, a=1.2, b=1.0)  # a close to b: a steep front
    u = pde.solve(exact[None, 0])[0]
    assert np.abs(u - exact).max() / np.abs(exact).max() < 1e-6


def test_first_row_is_the_grf_initial_condition():
    pde = Burgers()
    x = pde.generate(2, 32, seed=4, start=1)
    u0 = rf.periodic_grf_1d(sample_rngs(4, 1, 2), 32, pde.alpha, pde.tau, pde.sigma)
    c = np.fft.rfft(u0)
    c[:, 16] = 0  # the Nyquist mode is dropped
    np.testing.assert_allclose(x[:, 0, 0], np.fft.irfft(c, n=32), atol=1e-6)


def test_data_floor_far_below_perturbed_samples():
    """Interior: a 1% perturbation (of the sample's std) that is white or smooth on the pixel
    scale (Gaussian blur of 1 pixel) raises the residual MSE >100x over the floor. Measured at
    64 (see the class docstring): noise blurred over 2 / 4 pixels gives ~22x / ~5x, and the
    time-edge rows, where the initial condition's fine modes decay within a step, ~1-2x."""
    pde = pdes.get("burgers")
    x = torch.from_numpy(pde.generate(32, 64, seed=1)).double()
    base = pde.residual_stats(x)
    assert base["interior"]["mse"].mean() < 1e-3 * x.var()
    scale = 0.01 * x.std(dim=(1, 2, 3), keepdim=True)
    for noise, bound in [
        (torch.randn(x.shape, generator=torch.Generator().manual_seed(0)), 500),
        (smooth_noise(x.shape, 1.0), 100),
    ]:
        ratio = pde.residual_stats(x + scale * noise)["interior"]["mse"] / base["interior"]["mse"]
        assert ratio.median() > bound, ratio


def test_determinism_and_chunk_independence():
    pde = pdes.get("burgers")
    a = pde.generate(5, 32, seed=7)
    np.testing.assert_array_equal(a, pde.generate(5, 32, seed=7))
    np.testing.assert_array_equal(a[3:5], pde.generate(2, 32, seed=7, start=3))
    assert not np.array_equal(a, pde.generate(5, 32, seed=8))


def test_bad_input_errors_name_the_problem():
    pde = pdes.get("burgers")
    with pytest.raises(ShapeError, match=r"expected \[B, 1, H, W\]"):
        pde.residual(torch.zeros(2, 2, 16, 16))
    bad = torch.zeros(1, 1, 16, 16)
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN"):
        pde.residual(bad)
    with pytest.raises(ShapeError, match=r"\[B, R\]"):
        pde.solve(np.zeros(16))
    with pytest.raises(ConfigError, match="positive"):
        Burgers(nu=0.0)
    with pytest.raises(ConfigError, match="refine"):
        Burgers(refine=1)
