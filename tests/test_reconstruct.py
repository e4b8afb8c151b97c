"""pirf reconstruct: observation plans, the reconstruction chains, their scores and outputs."""

import json

import numpy as np
import pytest
import torch

from pirf import cli, data, pdes
from pirf.errors import ConfigError, DataFileError, OutputExistsError, UnknownNameError
from pirf.reconstruct import Guidance, ObservationPlan, Observations, Projection, channel_errors, reconstruct
from pirf.reconstruct.report import read_observed
from pirf.sampling import karras_sigmas


# -- observation plans -------------------------------------------------------------------------------
def test_plan_parses_fields_and_leaves_the_others_unobserved():
    plan = ObservationPlan.parse("u:0.03", pdes.get("darcy"))
    assert plan.fields == ("a", "u") and plan.fractions == (0.0, 0.03)
    assert plan.describe() == "u:0.03" and plan.observed() == ("u",)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("uu:0.1", UnknownNameError, "did you mean 'u'"),
        ("u=0.1", ConfigError, "CHANNEL:FRACTION"),
        ("u:1.5", ConfigError, r"fraction in \[0, 1\]"),
        ("u:abc", ConfigError, "not a number"),
        ("u:0", ConfigError, "nothing is observed"),
    ],
)
def test_plan_refuses_bad_specs_with_a_fix(text, error, message):
    with pytest.raises(error, match=message):
        ObservationPlan.parse(text, pdes.get("darcy"))


def test_masks_hold_the_fraction_and_depend_only_on_seed_and_case():
    plan = ObservationPlan.parse("a:1.0,u:0.1", pdes.get("darcy"))
    masks = plan.masks(seed=3, cases=range(8), shape=(16, 16))
    assert masks.shape == (8, 2, 16, 16)
    assert masks[:, 0].all()  # fraction 1: the whole channel
    assert (masks[:, 1].sum(axis=(1, 2)) == round(0.1 * 256)).all()
    np.testing.assert_array_equal(plan.masks(3, range(4), (16, 16)), masks[:4])  # a prefix
    np.testing.assert_array_equal(plan.masks(3, [5], (16, 16))[0], masks[5])  # case 5 alone
    assert not np.array_equal(plan.masks(4, range(8), (16, 16)), masks)  # another seed, other pixels
    assert not np.array_equal(masks[0, 1], masks[1, 1])  # each case its own pixels


# -- the chains on a Gaussian prior --------------------------------------------------------------------
def gaussian_denoiser(x, sigma):
    """E[x0 | x] for x0 ~ N(0, I), x = x0 + sigma n: x / (1 + sigma^2)."""
    return x / (1 + sigma.view(-1, 1, 1, 1) ** 2)


def _observations(seed=0):
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(4, 2, 8, 8, generator=g)
    mask = (torch.rand(4, 2, 8, 8, generator=g) < 0.3).float()
    return truth, Observations(mask, mask * truth)


def _no_residual(x0):
    return torch.zeros(x0.shape[0], dtype=x0.dtype)


def test_projection_matches_the_observations_exactly_where_observed():
    truth, obs = _observations()
    noise = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    out = Projection().run(gaussian_denoiser, noise, karras_sigmas(10), obs, _no_residual)
    observed = obs.mask.bool()
    torch.testing.assert_close(out.x0[observed], truth[observed].to(out.x0.dtype))
    assert out.nfe == 2 * 10 - 1 and Projection().gradient_steps(10) == 0


def test_guidance_lowers_the_observation_misfit_and_counts_its_gradients():
    _, obs = _observations()
    noise = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas = karras_sigmas(10)
    free = Guidance(zeta_obs=0.0).run(gaussian_denoiser, noise, sigmas, obs, _no_residual)
    guided = Guidance(zeta_obs=3.0).run(gaussian_denoiser, noise, sigmas, obs, _no_residual)
    assert (obs.misfit(guided.x0) < 0.5 * obs.misfit(free.x0)).all()
    assert free.nfe == 19 and guided.nfe == 19 + 10  # one network call per gradient
    assert Guidance(zeta_obs=0.0, zeta_pde=1.0).gradient_steps(10) == 2  # the last 20% only
    assert Guidance(zeta_obs=1.0).weights(9, 10) == pytest.approx((0.1, 0.0))  # late: obs x 0.1


def test_method_weights_are_checked():
    with pytest.raises(ConfigError, match="zeta_obs"):
        Guidance(zeta_obs=-1.0)
    with pytest.raises(ConfigError, match="pde_fraction"):
        Projection(pde_fraction=2.0)


# -- scores -------------------------------------------------------------------------------------------
def test_channel_errors_count_wrong_phases_and_relative_l2():
    pde = pdes.get("darcy")
    truth = np.full((2, 2, 8, 8), 3.0, dtype=np.float32)
    truth[:, 1] = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    rec = truth.copy()
    rec[0, 0, :2, :] = 11.0  # 16 of 64 pixels on the wrong side of (3 + 12) / 2
    rec[1, 0, 0, 0] = 7.0  # still nearer 3: not an error
    rec[1, 1] *= 1.1  # 10% relative error
    errors = channel_errors(pde, rec, truth)
    np.testing.assert_allclose(errors["a"], [0.25, 0.0])
    np.testing.assert_allclose(errors["u"], [0.0, 0.1], rtol=1e-5)


# -- the whole run -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    path = tmp_path_factory.mktemp("reconstruct") / "poisson_test.h5"
    data.generate_dataset(pdes.get("poisson"), 6, path, resolution=16, seed=7, progress=False)
    return path


def test_reconstruct_writes_files_imposes_observations_and_refuses_a_second_writer(
    tiny_poisson_model, held_out, tmp_path
):
    out = tmp_path / "rec"
    result = reconstruct(
        tiny_poisson_model,
        held_out,
        "u:0.25",
        out=out,
        n=3,
        steps=4,
        method="projection",
        zeta_pde=0.0,
        progress=False,
    )
    truth = data.read_fields(held_out, 0, 3)
    masks = read_observed(out / "reconstructions.h5")
    np.testing.assert_array_equal(masks, result.masks)
    fields = data.read_fields(out / "reconstructions.h5")
    np.testing.assert_allclose(fields[masks], truth[masks], rtol=1e-4, atol=1e-6)  # physical units
    report = json.loads((out / "report.json").read_text())
    assert report["cost"] == report["cost"] | {"network_calls_per_case": 7, "gradient_calls_per_case": 0}
    assert set(report["errors"]) == {"f", "u"} and report["errors"]["f"]["metric"] == "relative_l2"
    assert report["tuning"]["cases"] is None  # weights given: nothing tuned
    assert (out / "report.md").read_text().startswith("# Reconstruction: poisson from u:0.25")
    assert (out / "reconstructions.png").stat().st_size > 0
    with pytest.raises(OutputExistsError):
        reconstruct(tiny_poisson_model, held_out, "u:0.25", out=out, n=3, steps=4, method="projection")


def test_reconstruct_tunes_on_other_cases_and_says_when_the_file_is_too_small(tiny_poisson_model, held_out):
    with pytest.raises(DataFileError, match="need 8") as err:
        reconstruct(tiny_poisson_model, held_out, "u:0.25", n=4, steps=3, tune_cases=4, progress=False)
    assert "--zeta-obs" in err.value.fix
    result = reconstruct(tiny_poisson_model, held_out, "u:0.25", n=3, steps=3, tune_cases=2, progress=False)
    tuning = result.report["tuning"]
    assert tuning["cases"] == "samples 3 .. 4 of the data file"
    assert len(tuning["trials"]) == 12  # zeta_obs grid, then zeta_pde grid
    chosen = result.report["method"]
    best = min(tuning["trials"], key=lambda t: t["objective"])
    assert chosen["zeta_obs"] == best["zeta_obs"] and chosen["zeta_pde"] == best["zeta_pde"]


def test_reconstruct_refuses_data_of_another_pde(tiny_poisson_model, tmp_path):
    other = tmp_path / "darcy.h5"
    data.generate_dataset(pdes.get("darcy"), 2, other, resolution=16, progress=False)
    with pytest.raises(DataFileError, match="darcy"):
        reconstruct(tiny_poisson_model, other, "u:0.25", n=1, steps=3, zeta_obs=1.0, zeta_pde=0.0)


def test_cli_reconstruct_prints_the_errors(tiny_poisson_model, held_out, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "cli"
    argv = ["reconstruct", str(tiny_poisson_model), "--data", str(held_out), "--observe", "f:1.0"]
    argv += ["--n", "2", "--steps", "3", "--method", "projection", "--zeta-pde", "0", "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    assert "reconstruction errors" in printed and "relative_l2" in printed
    assert (out / "reconstructions.h5").exists()
