"""Darcy flow: operator orders on a manufactured solution, the solver against closed forms and an
independent sparse direct solve, properties and floor of the generated data, determinism, errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from pirf.errors import ConfigError, NonFiniteError, ShapeError
from pirf.pdes import registry
from pirf.pdes.darcy import Darcy, flux_form_operator, nonconservative_operator

FORMS = ("conservative", "nonconservative")
OPERATORS = {"conservative": flux_form_operator, "nonconservative": nonconservative_operator}


def orders(errors: list[float]) -> list[float]:
    return [math.log2(e0 / e1) for e0, e1 in itertools.pairwise(errors)]


def manufactured(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth a, u on the n-node grid and the exact -div(a grad u) there (by autograd)."""
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    y, x = torch.meshgrid(x, x, indexing="ij")
    x.requires_grad_(True)
    y.requires_grad_(True)
    a = 1 + 0.5 * torch.sin(2 * math.pi * x) * torch.cos(math.pi * y)
    u = torch.sin(math.pi * x) * torch.sin(math.pi * y) * (1 + x * y) + 0.3 * torch.cos(2 * x + y)

    def d(f, v):
        return torch.autograd.grad(f.sum(), v, create_graph=True)[0]

    exact = -(d(a * d(u, x), x) + d(a * d(u, y), y))
    return a.detach(), u.detach(), exact.detach()


def poisson_series(n: int, n_terms: int = 1000) -> np.ndarray:
    """-Laplacian(w) = 1 on (0,1)^2, w = 0 on the boundary: sum over odd k, l of
    16 sin(k pi x) sin(l pi y) / (pi^4 k l (k^2 + l^2)), at the n-node grid."""
    x = np.linspace(0, 1, n)
    k = np.arange(1, 2 * n_terms, 2)
    s = np.sin(math.pi * k[:, None] * x[None, :])
    c = 16 / (math.pi**4 * k[:, None] * k[None, :] * (k[:, None] ** 2 + k[None, :] ** 2))
    return s.T @ c @ s


def sparse_fv_solve(a: np.ndarray, forcing: float) -> np.ndarray:
    """Independent check: assemble the harmonic-mean 5-point matrix with scipy.sparse, solve directly."""
    n = a.shape[0]
    m = n - 2
    idx = np.arange(n * n).reshape(n, n)
    rows, cols, vals = [], [], []
    for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        p = idx[1:-1, 1:-1]
        q = idx[1 + di : n - 1 + di, 1 + dj : n - 1 + dj]
        ap, aq = a.ravel()[p], a.ravel()[q]
        face = 2 * ap * aq / (ap + aq) * (n - 1) ** 2
        rows += [p.ravel(), p.ravel()]
        cols += [p.ravel(), q.ravel()]
        vals += [face.ravel(), -face.ravel()]
    mat = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), (n * n, n * n))
    inner = idx[1:-1, 1:-1].ravel()
    u = np.zeros(n * n)
    u[inner] = spla.spsolve(mat[inner][:, inner].tocsc(), np.full(m * m, forcing))
    return u.reshape(n, n)


@pytest.fixture(scope="module")
def samples() -> torch.Tensor:
    return torch.from_numpy(Darcy().generate(16, resolution=32, seed=0)).double()


# -- residual operators ---------------------------------------------------------------------------
@pytest.mark.parametrize("form", FORMS)
def test_operator_second_order_on_manufactured_solution(form):
    errors = []
    for n in (33, 65, 129):
        a, u, exact = manufactured(n)
        approx = OPERATORS[form](a, u, 1.0 / (n - 1))
        errors.append((approx - exact[1:-1, 1:-1]).abs().max().item())
    assert all(1.8 < p < 2.2 for p in orders(errors)), (errors, orders(errors))


@pytest.mark.parametrize("form", FORMS)
def test_residual_is_operator_minus_forcing_and_bc_on_ring(form):
    pde = Darcy(residual_form=form, forcing=2.0)
    g = torch.Generator().manual_seed(0)
    x = torch.stack([3 + 9 * torch.rand(2, 12, 12, generator=g), torch.randn(2, 12, 12, generator=g)], 1)
    r = pde.residual(x)
    assert r.shape == (2, 12, 12)
    torch.testing.assert_close(r[:, 1:-1, 1:-1], OPERATORS[form](x[:, 0], x[:, 1], 1 / 11) - 2.0)
    ring = torch.ones(12, 12, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    torch.testing.assert_close(r[:, ring], x[:, 1][:, ring])


@pytest.mark.parametrize("form", FORMS)
def test_residual_differentiable_in_both_channels_and_keeps_dtype(form, samples):
    x = samples[:2].float().requires_grad_(True)
    r = Darcy(residual_form=form).residual(x)
    assert r.dtype == torch.float32
    r.pow(2).mean().backward()
    assert x.grad[:, 0].abs().sum() > 0 and x.grad[:, 1].abs().sum() > 0


def test_regions_partition_and_mark_jumps():
    pde = Darcy()
    a = torch.full((1, 10, 10), 3.0, dtype=torch.float64)
    a[0, 4, 5] = 12.0  # one high node: it and its 4 neighbours sit at a jump
    x = torch.stack([a, torch.zeros_like(a)], 1)
    masks = pde.regions(x)
    assert set(masks) == {"interior", "boundary", "interface"}
    total = sum(m.long() for m in masks.values())
    assert bool((total == 1).all())
    expected = {(4, 5), (3, 5), (5, 5), (4, 4), (4, 6)}
    assert {tuple(ij) for ij in masks["interface"][0].nonzero().tolist()} == expected


# -- solver ---------------------------------------------------------------------------------------
def test_solver_constant_coefficient_matches_series_at_second_order():
    errors = []
    for n in (17, 33, 65):
        u = Darcy(forcing=1.0).solve(np.full((n, n), 12.0))
        errors.append(np.abs(u - poisson_series(n) / 12.0).max())
    assert errors[-1] < 2e-6
    assert all(1.8 < p < 2.2 for p in orders(errors)), (errors, orders(errors))


def test_solver_matches_independent_sparse_direct_solve():
    rng = np.random.default_rng(1)
    a = np.where(rng.standard_normal((41, 41)) > 0, 12.0, 3.0)
    u = Darcy(forcing=1.5).solve(a[None])[0]
    ref = sparse_fv_solve(a, 1.5)
    assert np.abs(u - ref).max() < 1e-8 * np.abs(ref).max()


def test_solution_satisfies_the_conservative_residual_on_its_own_grid():
    x = torch.from_numpy(Darcy(refine=1).generate(4, resolution=24, seed=3)).double()
    stats = Darcy().residual_stats(x)
    assert stats["all"]["mse"].max() < 1e-8  # float32 storage only


# -- generated data -------------------------------------------------------------------------------
def test_generated_samples_physical_properties(samples):
    a, u = samples[:, 0], samples[:, 1]
    assert samples.shape == (16, 2, 32, 32)
    assert set(torch.unique(a).tolist()) == {3.0, 12.0}
    ring = torch.ones(32, 32, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    assert bool((u[:, ring] == 0).all())
    assert bool((u[:, 1:-1, 1:-1] > 0).all())
    assert 0.074 / 12 < u.amax().item() < 0.074 / 3  # loose: the maxima for constant a = 12 and a = 3


@pytest.mark.parametrize("form", FORMS)
def test_data_floor_is_concentrated_at_interfaces(form, samples):
    pde = Darcy(residual_form=form)
    stats = pde.residual_stats(samples)
    fraction = pde.regions(samples)["interface"].double().mean().item()
    assert 0.02 < fraction < 0.25  # measured: ~13% at R = 32, ~8% at 64, ~4% at 128
    assert stats["interior"]["mse"].mean() > 1e-4  # a real, non-zero floor (data solved on a finer grid)
    assert stats["interface"]["mse"].mean() > 10 * stats["interior"]["mse"].mean()


def test_data_floor_far_below_grid_scale_noise(samples):
    """A 1% pixel-level error in u (1% of the channel's spread) raises the interior residual by
    two orders of magnitude over the data's own floor."""
    pde = Darcy()
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal((16, 32, 32)))
    perturbed = samples.clone()
    perturbed[:, 1, 1:-1, 1:-1] += 0.01 * samples[:, 1].std() * noise[:, 1:-1, 1:-1]
    ratio = pde.residual_stats(perturbed)["interior"]["mse"] / pde.residual_stats(samples)["interior"]["mse"]
    assert ratio.median() > 100 and ratio.min() > 10, ratio


def test_cell_coefficients_are_exactly_the_output_channel_and_lower_the_floor(samples):
    """coefficient="cells": the fine solver sees a constant on each output node's cell, so the
    a channel describes the coefficient exactly; "continuous" thresholds the GRF on the fine
    grid, where sub-cell structure that the output grid cannot show raises the floor."""
    pde = Darcy()
    rng = np.random.default_rng(np.random.SeedSequence([0, 0]))
    a, a_fine = pde._coefficients(rng, 32, pde.refine_factor(32))
    blocks = np.repeat(np.repeat(a, 5, axis=0), 5, axis=1)[2:-2, 2:-2]  # each node's 5x5 cell
    np.testing.assert_array_equal(a_fine, blocks)
    np.testing.assert_array_equal(a, samples[0, 0].numpy())
    continuous = Darcy(coefficient="continuous", refine=4)
    other = torch.from_numpy(continuous.generate(16, resolution=32, seed=0)).double()
    for part in ("all", "interface"):
        cells_floor = pde.residual_stats(samples)[part]["mse"].mean()
        assert continuous.residual_stats(other)[part]["mse"].mean() > 3 * cells_floor


def test_exact_discrete_data_sit_orders_below_a_smooth_one_percent_perturbation():
    pde = Darcy(refine=1)  # solved on the output grid itself: residual = float32 rounding only
    x = torch.from_numpy(pde.generate(8, resolution=32, seed=0)).double()
    s = torch.sin(math.pi * torch.linspace(0, 1, 32, dtype=torch.float64))
    perturbed = x.clone()
    perturbed[:, 1] += 0.01 * x[:, 1].amax() * s[:, None] * s[None, :]
    floor = pde.residual_stats(x)["interior"]["mse"]
    assert bool((pde.residual_stats(perturbed)["interior"]["mse"] > 100 * floor).all())


def test_refinement_per_resolution_and_params():
    pde = Darcy()
    assert [pde.refine_factor(r) for r in (32, 64, 128)] == [5, 5, 3]  # odd: no node on a cell face
    assert Darcy(refine=4, coefficient="continuous").refine_factor(128) == 3
    assert Darcy(refine=1).refine_factor(128) == 1
    params = pde.params()
    assert params["refine"] == 5 and params["max_fine_nodes"] == 400 and params["coefficient"] == "cells"
    assert params["residual_form"] == "conservative"
    assert registry.get_class("darcy") is Darcy


def test_generation_is_deterministic_and_chunking_invariant():
    pde = Darcy()
    full = pde.generate(5, resolution=16, seed=7)
    np.testing.assert_array_equal(full, pde.generate(5, resolution=16, seed=7))
    np.testing.assert_array_equal(full[3:5], pde.generate(2, resolution=16, seed=7, start=3))
    assert not np.array_equal(full, pde.generate(5, resolution=16, seed=8))


# -- bad input ------------------------------------------------------------------------------------
def test_bad_input_raises_pirf_errors(samples):
    pde = Darcy()
    with pytest.raises(ShapeError):
        pde.residual(torch.zeros(1, 3, 16, 16))
    bad = samples[:1].clone()
    bad[0, 1, 5, 5] = float("nan")
    with pytest.raises(NonFiniteError):
        pde.residual(bad)
    with pytest.raises(ConfigError):
        pde.generate(1, resolution=4)
    with pytest.raises(ConfigError, match="conservative, nonconservative"):
        Darcy(residual_form="strong")
    with pytest.raises(ConfigError):
        Darcy(a_low=12.0, a_high=3.0)
    with pytest.raises(ConfigError):
        Darcy(refine=0)
    with pytest.raises(ConfigError):
        pde.solve(np.full((9, 9), -1.0))
    with pytest.raises(NonFiniteError):
        pde.solve(np.full((9, 9), np.nan))
    with pytest.raises(ShapeError):
        pde.solve(np.ones((9, 8)))
