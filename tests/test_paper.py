"""The ``-paper`` benchmarks: their residuals equal an independent implementation of the PIRF
authors' formulas (tests/paper_reference.py), their data follow the paper's conventions, pirf's
residual is available on the same data, and their shipped configs pretrain and fine-tune."""

import dataclasses

import numpy as np
import pytest
import torch

import pirf.pdes as pdes
from paper_reference import REFERENCE, interior_two_in
from pirf import cli, data
from pirf.errors import ConfigError
from pirf.pdes.paper import paper_score
from pirf.rewards import RewardConfig, make_reward

PAPER = sorted(REFERENCE)
CHEAP = {"kolmogorov-paper": {"spinup": 1.0}}  # small, fast settings (the physics is the parents')


def _pde(name, **params):
    return pdes.get(name, **{**CHEAP.get(name, {}), **params})


@pytest.fixture(scope="module", params=PAPER)
def case(request):
    pde = _pde(request.param)
    return pde, pde.generate(3, 24 if request.param != "kolmogorov-paper" else 16, seed=3)


def test_every_paper_benchmark_is_registered():
    assert {f"{p}-paper" for p in ("darcy", "poisson", "helmholtz", "burgers", "kolmogorov")} <= set(
        pdes.names()
    )


def test_paper_residual_equals_the_authors_formula(case):
    """On generated data and on data with pixel noise (so every stencil weight is exercised)."""
    pde, x = case
    noisy = x + 0.05 * x.std(axis=(0, 2, 3), keepdims=True) * np.random.default_rng(0).standard_normal(
        x.shape
    )
    for fields in (x, noisy):
        ours = pde.residual(torch.from_numpy(fields).double()).numpy()
        theirs = REFERENCE[pde.name](fields)
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9 * np.abs(theirs).max())


def test_agreement_on_generated_data_meets_the_two_percent_target(case):
    """The acceptance measure: median over samples of the relative difference, interior two pixels
    in, on the generated (float32) fields, both evaluated in float64 (Poisson's and Helmholtz's
    interior residual of exact solutions is round-off, which float32 arithmetic would compare)."""
    pde, x = case
    ours = interior_two_in(pde.residual(torch.from_numpy(x).double()).numpy())
    theirs = interior_two_in(REFERENCE[pde.name](x))
    rel = np.linalg.norm((ours - theirs).reshape(len(x), -1), axis=1) / np.linalg.norm(
        theirs.reshape(len(x), -1), axis=1
    )
    assert np.median(rel) < 0.02


def test_pirf_form_is_the_parent_residual_on_the_paper_grid(case):
    pde, x = case
    xt = torch.from_numpy(x).double()
    pirf_form = dataclasses.replace(pde, residual_form="pirf")
    got = pirf_form.residual(xt)
    if pde.name == "kolmogorov-paper":
        parent = pdes.get("kolmogorov", re=pde.re, spinup=pde.spinup)
        expected = parent.residual(xt.transpose(-1, -2)).transpose(-1, -2)
    elif pde.name == "darcy-paper":
        expected = pde.pirf_residual(xt)
    else:
        parent = pdes.get(
            pde.name.removesuffix("-paper"), **{k: v for k, v in pde.params().items() if k != "residual_form"}
        )
        expected = parent.residual(xt)
    torch.testing.assert_close(got, expected)


def test_residual_form_is_checked():
    for name in PAPER:
        with pytest.raises(ConfigError, match="residual_form"):
            pdes.get(name, residual_form="conservative")


# -- data conventions ---------------------------------------------------------------------------------
def test_elliptic_data_are_exact_five_point_solutions_with_diffusionpde_sources():
    poisson, helmholtz = (
        _pde("poisson-paper", residual_form="pirf"),
        _pde("helmholtz-paper", residual_form="pirf"),
    )
    for pde in (poisson, helmholtz):
        x = torch.from_numpy(pde.solve_samples(pdes.sample_rngs(0, 0, 4), 32, 0))  # float64
        assert pde.residual(x).abs().max() < 1e-9 * x[:, 0].abs().max()  # interior and ring u = 0
    f_poisson = poisson.solve_samples(pdes.sample_rngs(0, 0, 4), 32, 0)[:, 0]
    f_helmholtz = helmholtz.solve_samples(pdes.sample_rngs(0, 0, 4), 32, 0)[:, 0]
    assert np.abs(f_poisson[:, 0]).max() > 0.1  # the cosine GRF is not zero on the ring ...
    assert np.abs(f_helmholtz[:, 0]).max() == 0.0  # ... DiffusionPDE zeroes it for Helmholtz
    np.testing.assert_array_equal(f_poisson[:, 1:-1, 1:-1], f_helmholtz[:, 1:-1, 1:-1])


def test_the_paper_ring_penalizes_exact_elliptic_solutions_by_u1_over_h2():
    pde = _pde("poisson-paper")
    x = torch.from_numpy(pde.solve_samples(pdes.sample_rngs(1, 0, 2), 16, 0))
    f, u = x[:, 0], x[:, 1]
    h = 1.0 / 15
    edge = pde.residual(x)[:, 0, 2:-2]  # first row, away from the corners
    torch.testing.assert_close(edge, u[:, 1, 2:-2] / h**2 - f[:, 0, 2:-2])


def test_darcy_paper_is_cell_centred_and_its_solver_solves_the_flux_balance():
    pde = _pde("darcy-paper", refine=1, residual_form="pirf")
    np.testing.assert_allclose(pde.grid(8).coords[0], (np.arange(8) + 0.5) / 8)
    x = torch.from_numpy(pde.solve_samples(pdes.sample_rngs(0, 0, 2), 24, 0))
    assert pde.residual(x).abs().max() < 1e-7  # exact discrete solution, walls included
    assert (x[:, 1, 0] > 0).all()  # u is not zero on the ring: the wall is half a cell outside
    refined = _pde("darcy-paper", residual_form="pirf").generate(4, 24, seed=0)
    stats = pde.residual_stats(torch.from_numpy(refined).double())
    assert stats["interior"]["mse"].median() < 0.05 * stats["interface"]["mse"].median()


def test_kolmogorov_paper_is_the_transpose_of_pirf_kolmogorov():
    paper, plain = _pde("kolmogorov-paper", re=50.0), pdes.get("kolmogorov", re=50.0, spinup=1.0)
    np.testing.assert_array_equal(
        paper.generate(2, 16, seed=1), np.swapaxes(plain.generate(2, 16, seed=1), -1, -2)
    )
    laminar = torch.from_numpy(paper.laminar(32))
    assert torch.equal(laminar[0], laminar[5])  # constant along columns' direction: varies with y = columns
    w = laminar.expand(1, 3, 32, 32).double()
    assert paper.residual(w).abs().max() < 1e-10  # the forcing lies along the columns
    for field in paper.conditioning(16):
        assert (field.values == field.values[:1]).all() and field.values[0].std() > 0.5


def test_burgers_paper_is_nearly_blind_to_a_checkerboard():
    """The defect docs/paper.md reports: u_xx = D(D u) and the replicate-padded u_t cancel the
    grid-scale mode, so a 1% checkerboard barely moves the paper's residual; pirf's sees it."""
    pde = _pde("burgers-paper")
    x = torch.from_numpy(pde.generate(4, 64, seed=0)).double()
    board = torch.from_numpy(np.indices((64, 64)).sum(axis=0) % 2 * 2.0 - 1.0)
    noisy = x + 0.01 * x.std() * board
    ratio = {}
    for form in ("paper", "pirf"):
        p = dataclasses.replace(pde, residual_form=form)
        ratio[form] = float(
            p.residual_stats(noisy)["interior"]["mse"].median()
            / p.residual_stats(x)["interior"]["mse"].median()
        )
    assert ratio["paper"] < 2.0 < 100.0 < ratio["pirf"]


# -- the paper's metric, rewards, command line -------------------------------------------------------
def test_paper_score_is_the_all_pixel_mean_of_the_paper_form(case):
    pde, x = case
    xt = torch.from_numpy(x).double()
    r = REFERENCE[pde.name](x)
    score = paper_score(dataclasses.replace(pde, residual_form="pirf"), xt)
    assert score["mse"] == pytest.approx(np.mean(r**2)) and score["mae"] == pytest.approx(np.mean(np.abs(r)))
    with pytest.raises(ConfigError, match="no paper residual form"):
        paper_score(pdes.get("poisson"), torch.zeros(1, 2, 16, 16))


def test_registered_form_rewards_pick_the_form():
    pde = _pde("burgers-paper")
    assert make_reward(pde, RewardConfig(source="pirf-form")).pde.residual_form == "pirf"
    paper = make_reward(dataclasses.replace(pde, residual_form="pirf"), RewardConfig(source="paper-form"))
    assert paper.pde.residual_form == "paper"
    with pytest.raises(ConfigError, match="no paper residual form"):
        make_reward(pdes.get("poisson"), RewardConfig(source="pirf-form"))


def test_cli_lists_and_generates_paper_benchmarks(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli.console, "width", 240)  # a narrow terminal shortens long names
    with pytest.raises(SystemExit) as exc:
        cli.main(["pdes"])
    assert exc.value.code == 0 and "poisson-paper" in capsys.readouterr().out
    out = tmp_path / "p.h5"
    with pytest.raises(SystemExit) as exc:
        cli.main(["data", "generate", "poisson-paper", "--n", "4", "--resolution", "32", "--out", str(out)])
    assert exc.value.code == 0
    info = data.read_info(out)
    assert info.pde.name == "poisson-paper" and info.n == 4 and info.resolution == 32


# -- shipped configs (slow) ---------------------------------------------------------------------------
SMOKE = [
    "data.resolution=16",
    "data.n=16",
    "steps=2",
    "batch_size=4",
    "warmup_steps=1",
    "log_every=1",
    "checkpoint_every=2",
    "model.base_channels=8",
    "model.channel_mult=[1,2]",
    "model.layers_per_block=1",
    "model.mid_attention=false",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER)
def test_paper_gpu_configs_pretrain_and_finetune_a_few_steps(name, tmp_path):
    """The shipped ``<name>-gpu`` configs, shrunk to a 16x16 toy: pretrain 2 steps, fine-tune 2 iterations."""
    from pirf.config import load_config, resolve_config
    from pirf.finetune import finetune
    from pirf.finetune.config import resolve_finetune_config
    from pirf.training import PretrainConfig, pretrain

    shipped = load_config(PretrainConfig, resolve_config("pretrain", f"{name}-gpu"))
    assert shipped.data.pde == name and shipped.data.resolution == pdes.get_class(name).paper_resolution
    params = "{spinup: 1.0}" if name == "kolmogorov-paper" else "{}"
    overrides = [
        *SMOKE,
        f"data.path={tmp_path / 'train.h5'}",
        f"out={tmp_path / 'base'}",
        f"data.params={params}",
    ]
    pretrain(
        load_config(PretrainConfig, resolve_config("pretrain", f"{name}-gpu"), overrides), progress=False
    )
    cfg = resolve_finetune_config(
        str(tmp_path / "base"),
        "pirf",
        f"{name}-gpu",
        [
            f"out={tmp_path / 'ft'}",
            "iterations=2",
            "batch_size=2",
            "sampler.steps=4",
            "warmup_iterations=1",
            "eval.every=2",
            "eval.n=4",
            "eval.n_reference=8",
            "log_every=1",
            "checkpoint_every=2",
        ],
    )
    assert cfg.truncation.k == 2 and cfg.batch_size == 2
    finetune(cfg, progress=False)
    assert (tmp_path / "ft" / "model.safetensors").is_file()
