"""The contract every registered benchmark keeps (shapes, seeds, gradients, regions, errors)."""

import numpy as np
import pytest
import torch

import pirf.pdes as pdes
from pirf.errors import NonFiniteError, ShapeError

# small, fast settings per benchmark (the physics is tested in each benchmark's own file)
CHEAP = {
    "darcy": ({}, 16),
    "poisson": ({}, 16),
    "helmholtz": ({}, 16),
    "burgers": ({}, 16),
    "kolmogorov": ({"spinup": 1.0}, 16),
    "darcy-paper": ({}, 16),
    "poisson-paper": ({}, 16),
    "helmholtz-paper": ({}, 16),
    "burgers-paper": ({}, 16),
    "kolmogorov-paper": ({"spinup": 1.0}, 16),
}
BUILTIN = sorted(CHEAP)


def test_all_five_benchmarks_are_registered():
    assert set(BUILTIN) <= set(pdes.names())


@pytest.fixture(scope="module", params=BUILTIN)
def case(request):
    params, resolution = CHEAP[request.param]
    pde = pdes.get(request.param, **params)
    return pde, resolution, pde.generate(3, resolution, seed=5)


def test_shapes_dtype_and_finiteness(case):
    pde, r, x = case
    assert x.shape == (3, len(pde.fields), r, r) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.std() > 0


def test_sample_depends_only_on_seed_and_index(case):
    pde, r, x = case
    np.testing.assert_array_equal(pde.generate(1, r, seed=5, start=2)[0], x[2])
    assert not np.array_equal(pde.generate(1, r, seed=6, start=2)[0], x[2])


def test_residual_map_regions_and_gradient(case):
    pde, r, x = case
    xt = torch.from_numpy(x).double().requires_grad_(True)
    res = pde.residual(xt)
    assert res.shape == (3, r, r) and res.dtype == torch.float64
    regions = pde.regions(xt)
    cover = torch.stack(list(regions.values())).sum(dim=0)
    assert torch.equal(cover, torch.ones_like(cover))  # a partition of the pixels
    res.pow(2).mean().backward()
    assert xt.grad is not None and torch.isfinite(xt.grad).all() and xt.grad.abs().sum() > 0
    stats = pde.residual_stats(xt.detach().float())
    assert {"all", "interior"} <= set(stats) and stats["all"]["mse"].shape == (3,)


def test_params_round_trip_through_registry(case):
    pde, _, _ = case
    assert pdes.get(pde.name, **pde.params()) == pde


def test_bad_fields_are_refused(case):
    pde, r, x = case
    with pytest.raises(ShapeError, match="expected"):
        pde.residual(torch.zeros(1, len(pde.fields) + 1, r, r))
    bad = torch.from_numpy(x.copy())
    bad[0, 0, 1, 1] = float("inf")
    with pytest.raises(NonFiniteError):
        pde.residual(bad)
