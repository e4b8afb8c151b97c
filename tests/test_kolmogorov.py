"""Kolmogorov flow: solver against closed forms, residual order in time, data floor, seeds, errors."""

import math

import numpy as np
import pytest
import torch

import pirf.pdes as pdes
from conftest import convergence_order
from pirf.errors import ConfigError, NonFiniteError, ShapeError
from pirf.pdes.kolmogorov import Kolmogorov


def nodes(r: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) meshgrid of the R x R sample grid on [0, 2 pi)^2, rows = y."""
    g = 2 * math.pi * np.arange(r) / r
    return np.meshgrid(g, g, indexing="ij")


def taylor_green(pde: Kolmogorov, r: int, t: np.ndarray, k: int = 2) -> np.ndarray:
    """w = 2k cos(kx) cos(ky) exp(-(2k^2/Re + drag) t): exact without forcing, ``[len(t), R, R]``."""
    y, x = nodes(r)
    decay = np.exp(-(2 * k**2 / pde.re + pde.drag) * np.asarray(t, dtype=float))
    return decay[:, None, None] * (2 * k * np.cos(k * x) * np.cos(k * y))[None]


def shear_and_cells(pde: Kolmogorov, r: int, t: np.ndarray, a0: float, b0: float) -> np.ndarray:
    """w = a(t) cos(k_f y) + b(t) cos(k_f x): exact with the forcing, since u.grad w = 0 for a
    single |k| shell (the two advection terms cancel); a relaxes to the laminar a_L = -A / lam."""
    k = pde.forcing_wavenumber
    lam = k**2 / pde.re + pde.drag
    a_lam = -pde.forcing_amp / lam
    decay = np.exp(-lam * np.asarray(t, dtype=float))[:, None, None]
    y, x = nodes(r)
    return (a_lam + (a0 - a_lam) * decay) * np.cos(k * y)[None] + b0 * decay * np.cos(k * x)[None]


def test_registered_with_paper_setting():
    pde = pdes.get("kolmogorov", re=1000)
    assert isinstance(pde, Kolmogorov) and pde.params()["re"] == 1000
    assert pdes.get("kolmogorov").re == 50.0


def test_residual_vanishes_on_the_laminar_state():
    pde = pdes.get("kolmogorov")
    w = torch.from_numpy(pde.laminar(32))
    assert pde.residual(torch.stack([w, w, w])[None]).abs().max() < 1e-10
    assert pde.residual(torch.stack([-w, -w, -w])[None]).abs().max() > 1  # the sign matters


def test_residual_second_order_in_dt_frame_on_exact_solution():
    """Spectral space derivatives are exact on Taylor-Green; the central time difference leaves
    lam^3 dt^2 / 6 w: 2nd order when dt_frame halves."""
    steps = [8, 16, 32]
    errors = []
    for n in steps:
        pde = Kolmogorov(re=10.0, forcing_amp=0.0, dt_frame=1.0 / n)
        w = taylor_green(pde, 32, 0.5 + pde.dt_frame * np.array([-1.0, 0.0, 1.0]))
        errors.append(pde.residual(torch.from_numpy(w)[None]).abs().max().item())
    assert convergence_order(errors, steps) == pytest.approx(2.0, abs=0.05)


def test_solver_matches_decaying_taylor_green():
    pde = Kolmogorov(re=10.0, forcing_amp=0.0)
    frames = [0, 3, 32]
    out = pde.trajectory(taylor_green(pde, 32, [0.0]), frames)[0]
    exact = taylor_green(pde, 32, pde.dt_frame * np.array(frames))
    assert np.abs(out - exact).max() / np.abs(exact).max() < 1e-5  # float32 solver


def test_solver_matches_forced_shear_and_cells():
    pde = Kolmogorov(re=20.0)
    frames = [0, 1, 16, 64]
    out = pde.trajectory(shear_and_cells(pde, 32, [0.0], 1.0, 2.0), frames)[0]
    exact = shear_and_cells(pde, 32, pde.dt_frame * np.array(frames), 1.0, 2.0)
    assert np.abs(out - exact).max() / np.abs(exact).max() < 1e-5


@pytest.fixture(scope="module")
def default_samples():
    """One trajectory (32 windows) at the CPU default, with a shorter spin-up."""
    pde = Kolmogorov(spinup=10.0)
    return pde, torch.from_numpy(pde.generate(32, 64, seed=1)).double()


def test_default_flow_is_time_dependent_and_not_laminar(default_samples):
    _, x = default_samples
    assert (x[:, 2] - x[:, 0]).std() > 0.01 * x.std()  # changes within 2 frames
    assert (x[:, 1] - x[:, 1].mean(dim=-1, keepdim=True)).std() > 0.3 * x.std()  # not a shear flow
    assert not torch.allclose(x[0], x[-1], atol=0.1 * x.std().item())


def test_data_floor_far_below_perturbed_samples(default_samples):
    """A 1% perturbation (of the sample's std), white or smooth, independent per frame or the
    same in all three, raises the residual MSE >100x over the floor (measured: ~1e4x for
    per-frame noise, ~200-900x for static smooth noise)."""
    pde, x = default_samples
    base = pde.residual_stats(x)["all"]["mse"]
    assert base.mean() < 1e-4 * x.var()
    gen = torch.Generator().manual_seed(0)
    white = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    k = torch.fft.fftfreq(x.shape[-1], dtype=torch.float64)
    blur = torch.exp(-2 * math.pi**2 * 2.0**2 * (k[:, None] ** 2 + k[None, :] ** 2))  # 2-pixel Gaussian
    smooth = torch.fft.ifft2(torch.fft.fft2(white) * blur).real
    smooth = smooth / smooth.std(dim=(-2, -1), keepdim=True)
    scale = 0.01 * x.std(dim=(1, 2, 3), keepdim=True)
    for noise, bound in [(white, 1000), (smooth, 1000), (smooth[:, :1].expand_as(x), 100)]:
        ratio = pde.residual_stats(x + scale * noise)["all"]["mse"] / base
        assert ratio.median() > bound, ratio


def test_determinism_and_chunk_independence():
    """Samples depend on (seed, index) only, whatever the request: within one trajectory, across
    two trajectories and with a different batch of trajectories (the flow is chaotic, so this
    needs a bitwise-reproducible solver)."""
    pde = Kolmogorov(spinup=1.0)
    a = pde.generate(35, 16, seed=2)
    np.testing.assert_array_equal(a, pde.generate(35, 16, seed=2))
    np.testing.assert_array_equal(a[3:5], pde.generate(2, 16, seed=2, start=3))
    np.testing.assert_array_equal(a[31:35], pde.generate(4, 16, seed=2, start=31))
    np.testing.assert_array_equal(a[33:35], pde.generate(2, 16, seed=2, start=33))
    assert not np.array_equal(a[:5], pde.generate(5, 16, seed=3))


def test_bad_input_errors_name_the_problem():
    pde = pdes.get("kolmogorov")
    with pytest.raises(ShapeError, match=r"expected \[B, 3, H, W\]"):
        pde.residual(torch.zeros(2, 1, 16, 16))
    bad = torch.zeros(1, 3, 16, 16)
    bad[0, 2, 3, 3] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN"):
        pde.residual(bad)
    with pytest.raises(ShapeError, match=r"\[B, R, R\]"):
        pde.trajectory(np.zeros((16, 16)), [0, 1])
    with pytest.raises(ConfigError, match="positive"):
        Kolmogorov(re=0.0)
    with pytest.raises(ConfigError, match="at least 16"):
        pde.generate(1, 8)


@pytest.mark.slow
def test_paper_setting_generates():
    pde = pdes.get("kolmogorov", re=1000)
    x = pde.generate(1, 128, seed=0)
    assert x.shape == (1, 3, 128, 128) and np.isfinite(x).all()
