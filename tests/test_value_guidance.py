"""Value-guided sampling (Uehara et al. 2024's soft-optimal policy on DDIM): the tilted Gaussian in
closed form, best-of-M, alpha = inf as plain DDIM, call counts, per-sample seeds, clear errors,
and `pirf sample --guidance`."""

import itertools
import json
import math

import h5py
import numpy as np
import pytest
import torch

from pirf import cli, data
from pirf.errors import ConfigError
from pirf.rewards import BlackBoxReward
from pirf.sampling import karras_sigmas, sample_ddim
from pirf.sampling.value import RewardValue, sample_value_guided

M, S = 0.5, 1.0  # the base distribution N(M, S^2)


class ExactGaussian(torch.nn.Module):
    """The exact denoiser of N(m, s^2) data: D(x, sigma) = m + s^2 / (s^2 + sigma^2) (x - m)."""

    channels, resolution = 1, 1

    def __init__(self, m: float = M, s: float = S) -> None:
        super().__init__()
        self.m, self.s, self.sigma_data = m, s, s
        self.calls = 0

    def forward(self, x, sigma):
        self.calls += 1
        shrink = self.s**2 / (self.s**2 + sigma.view(-1, 1, 1, 1) ** 2)
        return self.m + shrink * (x - self.m)


def linear(w: float):
    return lambda x: w * x.flatten(1).sum(dim=1)


def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def unit_noise(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, 1, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- the closed form -------------------------------------------------------------------------------------
def test_gradient_guidance_samples_the_tilted_gaussian():
    """p(x) exp(w x / alpha) with p = N(m, s^2) is N(m + s^2 w / alpha, s^2). The chain converges
    to it as O(1 / N): the value's gradient is taken at sigma instead of sigma', and ancestral
    DDIM itself shrinks the variance (by 1.1% at 1000 Karras steps, 5.3% at 200; the chain's exact
    moments follow from its linear recursion). Tolerance: that bias + 4 standard errors of
    40000 samples (0.005 on the mean, 0.007 on the variance)."""
    w, alpha, den = 1.0, 2.0, ExactGaussian()
    out = sample_value_guided(
        den, unit_noise(40_000), karras_sigmas(1000), linear(w), alpha=alpha, generator=torch.Generator()
    )
    assert abs(out.x0.mean().item() - (M + S**2 * w / alpha)) < 0.035
    assert abs(out.x0.var().item() - S**2) < 0.045


def test_the_guidance_is_a_mean_shift_of_std2_grad_over_alpha_converging_in_the_steps():
    """A linear value on a Gaussian only shifts the chain: guided - plain (same noise) is one
    number for every sample, so the variance is the base's; the first step moves by exactly
    std^2 w D'(x) / alpha; the total shift tends to s^2 w / alpha with an O(1 / N) error."""
    w, alpha, den = 1.0, 2.0, ExactGaussian()
    shift_error = {}
    for steps in (200, 1000):
        sigmas = karras_sigmas(steps)
        kw = {"generator": gens(range(8)), "return_trajectory": True}
        plain = sample_ddim(den, unit_noise(8), sigmas, **kw)
        kw = {"generator": gens(range(8)), "return_trajectory": True}
        guided = sample_value_guided(den, unit_noise(8), sigmas, linear(w), alpha=alpha, **kw)
        shift = guided.x0 - plain.x0
        assert shift.std() < 1e-9
        shift_error[steps] = abs(shift.mean().item() - S**2 * w / alpha)
        s0, s1 = sigmas[0].item(), sigmas[1].item()
        std2 = s1**2 * (s0**2 - s1**2) / s0**2  # DDIM's variance at eta = 1
        first = guided.trajectory[1] - plain.trajectory[1]
        torch.testing.assert_close(first, torch.full_like(first, std2 * w * S**2 / (S**2 + s0**2) / alpha))
    assert shift_error[200] < 0.06 and shift_error[1000] < 0.012
    assert 3.5 < shift_error[200] / shift_error[1000] < 6.5  # first order in 1 / N


def test_best_of_m_raises_a_linear_reward_monotonically_in_m():
    den, sigmas, means = ExactGaussian(), karras_sigmas(10), []
    for m in (1, 2, 4, 8):
        out = sample_value_guided(
            den,
            unit_noise(2000),
            sigmas,
            linear(1.0),
            alpha=1.0,
            mode="best-of",
            candidates=m,
            generator=gens([m])[0],
        )
        means.append(out.x0.mean().item())
    assert all(a + 0.1 < b for a, b in itertools.pairwise(means)), means
    assert abs(means[0] - M) < 0.1  # M = 1 is unguided


# -- alpha = inf, seeds, call counts -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["gradient", "best-of"])
def test_alpha_inf_is_plain_ddim(mode):
    den, noise, sigmas = ExactGaussian(), unit_noise(5), karras_sigmas(12)
    plain = sample_ddim(den, noise, sigmas, eta=0.7, generator=gens(range(5)))
    guided = sample_value_guided(
        den, noise, sigmas, linear(3.0), alpha=math.inf, mode=mode, eta=0.7, generator=gens(range(5))
    )
    assert torch.equal(guided.x0, plain.x0) and guided.nfe == plain.nfe == 12


def test_one_candidate_is_plain_ddim_at_its_cost():
    den, noise, sigmas = ExactGaussian(), unit_noise(5), karras_sigmas(12)
    plain = sample_ddim(den, noise, sigmas, generator=gens(range(5)))
    best = sample_value_guided(
        den, noise, sigmas, linear(3.0), alpha=1.0, mode="best-of", candidates=1, generator=gens(range(5))
    )
    assert torch.equal(best.x0, plain.x0) and best.nfe == plain.nfe


@pytest.mark.parametrize(("mode", "calls"), [("gradient", 7), ("best-of", 1 + 3 * 6)])
def test_network_calls_are_counted(mode, calls):
    """gradient: one call (and one backward) per step; best-of: 1 + M per stochastic step, the
    chosen proposal's estimate being the next step's call."""
    den = ExactGaussian()
    out = sample_value_guided(
        den, unit_noise(4), karras_sigmas(7), linear(1.0), alpha=1.0, mode=mode, candidates=3
    )
    assert out.nfe == den.calls == calls


@pytest.mark.parametrize("mode", ["gradient", "best-of"])
def test_samples_depend_only_on_their_own_generator(mode):
    den, noise, sigmas = ExactGaussian(), unit_noise(3), karras_sigmas(6)
    kw = {"alpha": 0.5, "mode": mode, "candidates": 3}
    batch = sample_value_guided(den, noise, sigmas, linear(1.0), generator=gens([10, 11, 12]), **kw).x0
    alone = sample_value_guided(den, noise[1:2], sigmas, linear(1.0), generator=gens([11]), **kw).x0
    assert torch.equal(batch[1:2], alone)


def test_best_of_takes_a_black_box_reward_and_gradient_mode_refuses_it():
    reward = RewardValue(BlackBoxReward(lambda x: x.reshape(len(x), -1).sum(axis=1)))
    den, noise, sigmas = ExactGaussian(), unit_noise(200), karras_sigmas(8)
    plain = sample_ddim(den, noise, sigmas, generator=torch.Generator().manual_seed(0))
    best = sample_value_guided(
        den, noise, sigmas, reward, alpha=1.0, mode="best-of", generator=torch.Generator().manual_seed(0)
    )
    assert best.x0.mean() > plain.x0.mean() + 0.5
    with pytest.raises(ConfigError, match="best-of"):
        sample_value_guided(den, noise, sigmas, reward, alpha=1.0)
    with pytest.raises(ConfigError, match="best-of"):  # no flag, but no gradient either
        sample_value_guided(den, noise, sigmas, lambda x: x.flatten(1).sum(1).detach(), alpha=1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "alpha > 0"),
        ({"alpha": -1.0}, "alpha > 0"),
        ({"alpha": math.nan}, "alpha > 0"),
        ({"mode": "best-of", "candidates": 0}, "M >= 1"),
        ({"mode": "best-of", "candidates": 2.5}, "M >= 1"),
        ({"eta": 0.0}, "0 < eta <= 1"),
        ({"eta": 1.5, "mode": "best-of"}, "0 < eta <= 1"),
        ({"mode": "best_of"}, "did you mean 'best-of'"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, message):
    kwargs = {"alpha": 1.0} | kwargs
    with pytest.raises(ConfigError, match=message):
        sample_value_guided(ExactGaussian(), unit_noise(2), karras_sigmas(4), linear(1.0), **kwargs)


# -- pirf sample --guidance --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_run(rough_poisson_model):
    """The run folder of a tiny EDM model trained for 4 steps (rough samples: the CLI path is
    what is tested)."""
    return rough_poisson_model.parent


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, " ".join(out.err.split())


@pytest.mark.parametrize(
    ("flags", "guidance", "calls"),
    [
        ([], {"kind": "none"}, 2 * 3 - 1),
        (["--guidance", "value", "--alpha", "10"], {"kind": "value", "mode": "gradient", "alpha": 10.0}, 3),
        (
            ["--guidance", "value", "--guidance-mode", "best-of", "--candidates", "2"],
            {"kind": "value", "mode": "best-of", "candidates": 2, "eta": 1.0},
            1 + 2 * 2,
        ),
        (["--guidance", "dps", "--zeta", "1e-3"], {"kind": "dps", "zeta": 1e-3}, 2 * 3 - 1 + 1),
    ],
)
def test_cli_sample_with_guidance_records_it(model_run, tmp_path, capsys, flags, guidance, calls):
    out = tmp_path / "s"
    argv = ["sample", str(model_run), "--n", "3", "--steps", "3", "--batch-size", "2", "--out", str(out)]
    code, stdout, err = run([*argv, *flags], capsys)
    assert code == 0, err
    assert f"{calls} network calls per sample" in " ".join(stdout.split())
    with h5py.File(out / "samples.h5") as f:
        provenance = json.loads(f.attrs["sampling"])
        assert np.isfinite(f["fields"][:]).all() and f["fields"].shape == (3, 2, 16, 16)
    assert provenance["guidance"] | guidance == provenance["guidance"]
    assert provenance["sampler"] == ("ddim" if guidance["kind"] == "value" else "heun")


def test_cli_value_guidance_is_seeded_per_sample(model_run, tmp_path, capsys):
    flags = ["--guidance", "value", "--alpha", "1", "--steps", "3", "--seed", "4"]
    for n, batch in ((3, 3), (2, 1)):
        code, _, err = run(
            [
                "sample",
                str(model_run),
                *flags,
                "--n",
                str(n),
                "--batch-size",
                str(batch),
                "--out",
                str(tmp_path / f"n{n}"),
            ],
            capsys,
        )
        assert code == 0, err
    three, two = (data.read_fields(tmp_path / f"n{n}" / "samples.h5") for n in (3, 2))
    np.testing.assert_allclose(three[:2], two, rtol=1e-5, atol=1e-6)  # a prefix, whatever the batch


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--guidance", "valeu"], "did you mean 'value'? use one of: none, dps, value"),
        (["--guidance", "value"], "needs --alpha"),
        (["--guidance", "value", "--alpha", "0"], "alpha > 0"),
        (["--guidance", "value", "--guidance-mode", "best", "--alpha", "1"], "use one of: gradient, best-of"),
        (["--guidance", "dps"], "needs a step size --zeta"),
        (["--alpha", "1"], "--alpha given with --guidance none"),
        (["--guidance", "dps", "--zeta", "1", "--candidates", "3"], "--candidates given with --guidance dps"),
        (["--guidance", "value", "--alpha", "1", "--sampler", "heun"], "runs the ddim chain"),
        (["--guidance", "value", "--alpha", "1", "--eta", "0"], "0 < eta <= 1"),
        (["--guidance", "value", "--alpha", "1e-30", "--n", "2", "--steps", "4"], "raise alpha"),
    ],
)
def test_cli_bad_guidance_exits_2_with_the_choices(model_run, tmp_path, capsys, flags, message):
    code, _, err = run(["sample", str(model_run), "--out", str(tmp_path / "x"), *flags], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
