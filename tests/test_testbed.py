"""The exact test bed (`pirf.testing`): closed forms against quadrature, wrappers against the
closed form, pirf's training and sampling against known Gaussians."""

import math

import pytest
import torch

from pirf.errors import ConfigError, ShapeError
from pirf.models.denoiser import Denoiser, FlowDenoiser
from pirf.sampling import karras_sigmas, sample_heun
from pirf.testing import (
    GaussianMixture,
    LinearReward,
    MixtureBackbone,
    QuadraticReward,
    gaussian_kl,
    kl_monte_carlo,
    moments,
    testbed_model,
    train_testbed_base,
)

F64 = torch.float64


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def mixture_1d() -> GaussianMixture:
    """Two unequal modes in 1-D: 0.3 N(-1, 0.25) + 0.7 N(1.5, 0.6)."""
    return GaussianMixture(t64([0.3, 0.7]), t64([[-1.0], [1.5]]), t64([[[0.25]], [[0.6]]]))


def mixture_2d() -> GaussianMixture:
    """Three correlated, unequal components in 2-D."""
    covs = t64([[[0.5, 0.2], [0.2, 0.3]], [[0.2, -0.1], [-0.1, 0.4]], [[0.8, 0.0], [0.0, 0.1]]])
    return GaussianMixture(t64([0.2, 0.5, 0.3]), t64([[-1.0, 0.5], [1.0, -0.5], [0.3, 1.2]]), covs)


def normal_pdf(x: torch.Tensor, mean: float, var: float) -> torch.Tensor:
    return torch.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


# ----------------------------------------------------------------------------------------------
# the tilts p exp(r / alpha) / Z against quadrature


GRID = torch.linspace(-20, 20, 40_001, dtype=F64)


def quadrature_tilt(mix: GaussianMixture, reward, alpha: float):
    """Per-component mass, mean and variance of pi_k N(x; mu_k, s_k) exp(r(x) / alpha) on GRID."""
    tilt = torch.exp(reward(GRID[:, None]) / alpha)
    pieces = [
        w * normal_pdf(GRID, m[0].item(), c[0, 0].item()) * tilt
        for w, m, c in zip(mix.weights, mix.means, mix.covs, strict=True)
    ]
    mass = torch.stack([torch.trapezoid(f, GRID) for f in pieces])
    means = torch.stack([torch.trapezoid(GRID * f, GRID) for f in pieces]) / mass
    var = torch.stack(
        [torch.trapezoid((GRID - m) ** 2 * f, GRID) for f, m in zip(pieces, means, strict=True)]
    )
    density = sum(pieces) / mass.sum()
    return mass / mass.sum(), means, var / (mass / mass.sum() * mass.sum()), density


@pytest.mark.parametrize(
    ("reward", "optimum"),
    [
        (LinearReward(t64([0.7])), lambda mix, a: mix.tilt_linear(t64([0.7]), a)),
        (QuadraticReward(t64([0.5]), k=2.0), lambda mix, a: mix.tilt_quadratic(t64([0.5]), 2.0, a)),
    ],
    ids=["linear", "quadratic"],
)
@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_tilts_match_quadrature_1d(reward, optimum, alpha):
    mix = mixture_1d()
    weights, means, variances, density = quadrature_tilt(mix, reward, alpha)
    tilted = optimum(mix, alpha)
    assert tilted.weights.sum().item() == pytest.approx(1.0, abs=1e-14)
    torch.testing.assert_close(tilted.weights, weights, rtol=0, atol=1e-8)
    torch.testing.assert_close(tilted.means[:, 0], means, rtol=0, atol=1e-8)
    torch.testing.assert_close(tilted.covs[:, 0, 0], variances, rtol=0, atol=1e-8)
    torch.testing.assert_close(
        tilted.log_prob(GRID[::400, None]).exp(), density[::400], rtol=1e-8, atol=1e-12
    )
    assert reward.optimum(mix, alpha).means.allclose(tilted.means)  # the rewards name their optimum
    assert not torch.allclose(tilted.weights, mix.weights, atol=1e-3)  # the tilt moved something


def test_tilts_match_quadrature_2d():
    """Correlated covariances: Sigma_k w (not w) shifts the means, the precision adds (k/alpha) I."""
    mix = mixture_2d()
    axis = torch.linspace(-9, 9, 451, dtype=F64)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([gx.flatten(), gy.flatten()], 1)
    cases = [(LinearReward(t64([0.6, -0.9])), 0.8), (QuadraticReward(t64([0.4, 0.8]), k=3.0), 0.7)]
    for reward, alpha in cases:
        log_f = mix.log_prob(points) + reward(points) / alpha
        f = (log_f - log_f.max()).exp().reshape(451, 451)

        def integral(g, f=f):
            return torch.trapezoid(torch.trapezoid(g * f, axis, dim=1), axis)

        z = integral(torch.ones_like(gx))
        mean = torch.stack([integral(gx), integral(gy)]) / z
        dx, dy = gx - mean[0], gy - mean[1]
        cov = torch.stack([integral(dx * dx), integral(dx * dy), integral(dy * dy)]) / z
        tilted = reward.optimum(mix, alpha)
        torch.testing.assert_close(tilted.mean(), mean, rtol=0, atol=1e-8)
        torch.testing.assert_close(tilted.cov().flatten()[[0, 1, 3]], cov, rtol=0, atol=1e-8)
        log_density = log_f - log_f.max() - z.log()  # log(p exp(r / alpha) / Z) on the grid
        got = tilted.log_prob(points[::997])
        torch.testing.assert_close(got, log_density[::997], rtol=0, atol=1e-8)


def test_tilt_is_the_kl_regularized_optimum():
    """Gaussian p_ref, linear r: J(p) = E_p[r] - alpha KL(p || p_ref) peaks at the tilt, J = alpha log Z."""
    mean, cov, w, alpha = t64([0.3, -0.2]), t64([[1.0, 0.3], [0.3, 0.5]]), t64([1.0, -0.5]), 0.7
    ref = GaussianMixture.gaussian(mean, cov)
    best = ref.tilt_linear(w, alpha)

    def objective(m, c):
        return m @ w - alpha * gaussian_kl(m, c, mean, cov)

    j_star = objective(best.means[0], best.covs[0])
    log_z = w @ mean / alpha + w @ cov @ w / (2 * alpha**2)
    assert j_star.item() == pytest.approx(alpha * log_z.item(), rel=1e-12)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        dm = 0.1 * torch.randn(2, generator=gen, dtype=F64)
        a = torch.eye(2, dtype=F64) + 0.1 * torch.randn(2, 2, generator=gen, dtype=F64)
        assert objective(best.means[0] + dm, a @ best.covs[0] @ a.T) < j_star


def test_bad_tilt_parameters_are_refused():
    with pytest.raises(ConfigError):
        mixture_1d().tilt_linear(t64([1.0]), alpha=0.0)
    with pytest.raises(ConfigError):
        mixture_1d().tilt_quadratic(t64([0.0]), k=-1.0, alpha=1.0)


# ----------------------------------------------------------------------------------------------
# the closed-form denoiser


def quadrature_posterior_mean(mix: GaussianMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    grid = torch.linspace(-15, 15, 30_001, dtype=F64)
    prior = sum(
        w * normal_pdf(grid, m[0].item(), c[0, 0].item())
        for w, m, c in zip(mix.weights, mix.means, mix.covs, strict=True)
    )
    joint = prior[None] * normal_pdf(x[:, None], grid[None], sigma**2)  # [B, grid]
    return torch.trapezoid(grid * joint, grid, dim=1) / torch.trapezoid(joint, grid, dim=1)


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0, 3.0])
def test_posterior_mean_matches_quadrature_1d(sigma):
    mix = mixture_1d()
    x = torch.linspace(-3, 4, 9, dtype=F64)
    expected = quadrature_posterior_mean(mix, x, sigma)
    torch.testing.assert_close(mix.posterior_mean(x[:, None], sigma)[:, 0], expected, rtol=0, atol=1e-9)


def test_posterior_mean_limits():
    mix = mixture_1d()
    x = torch.linspace(-3, 4, 9, dtype=F64)[:, None]
    assert torch.equal(mix.posterior_mean(x, 0.0), x)  # exactly x at sigma = 0
    assert (mix.posterior_mean(x, 1e-5) - x).abs().max().item() < 1e-8  # x + O(sigma^2)
    far = mix.posterior_mean(x, 1e4)
    torch.testing.assert_close(far, mix.mean().expand_as(far), rtol=0, atol=1e-6)  # -> E[x0]
    sigmas = t64([0.0, 1e-5, 0.3, 1.0, 3.0, 1e4, 0.3, 0.3, 0.3])  # one per point = each alone
    each = torch.cat([mix.posterior_mean(x[i : i + 1], s.item()) for i, s in enumerate(sigmas)])
    torch.testing.assert_close(mix.posterior_mean(x, sigmas), each, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("sigma", [0.1, 0.7, 2.5])
def test_posterior_mean_is_tweedie_2d(sigma):
    """E[x0 | x] = x + sigma^2 grad log p_sigma(x), the score by autograd of `log_prob`."""
    mix = mixture_2d()
    x = mix.sample(16, torch.Generator().manual_seed(1)) + sigma * torch.randn(
        16, 2, generator=torch.Generator().manual_seed(2), dtype=F64
    )
    x.requires_grad_(True)
    (score,) = torch.autograd.grad(mix.log_prob(x, sigma).sum(), x)
    torch.testing.assert_close(mix.score(x, sigma), score, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mix.posterior_mean(x, sigma), x + sigma**2 * score, rtol=1e-10, atol=1e-12)
    _, eps_hat = mix.denoise(x, sigma)
    torch.testing.assert_close(eps_hat, -sigma * score, rtol=1e-10, atol=1e-12)  # E[n | x]


def test_mixture_moments_and_sampling():
    mix = mixture_2d()
    mean, cov = moments(mix.sample(200_000, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(mean, mix.mean(), rtol=0, atol=0.01)
    torch.testing.assert_close(cov, mix.cov(), rtol=0, atol=0.02)
    with pytest.raises(ShapeError):
        mix.posterior_mean(torch.zeros(4, 3, dtype=F64), 1.0)


# ----------------------------------------------------------------------------------------------
# the wrapped models are the closed form


SIGMAS = [0.0, 1e-300, 1e-6, 1e-2, 0.5, 2.0, 20.0, 80.0, 1e3]


@pytest.mark.parametrize("kind", ["edm", "flow"])
def test_wrapped_model_is_the_posterior_mean(kind):
    mix = mixture_2d()
    model = testbed_model(kind, mix, sigma_data=0.7)
    assert isinstance(model, Denoiser if kind == "edm" else FlowDenoiser)
    assert (model.channels, model.resolution) == (2, 1)
    gen = torch.Generator().manual_seed(0)
    x0 = mix.sample(32, gen)
    for sigma in SIGMAS:
        x = x0 + sigma * torch.randn(32, 2, generator=gen, dtype=F64)
        out = model(x[:, :, None, None], sigma)
        assert out.shape == (32, 2, 1, 1)
        scale = x.abs().max().item()  # round-off is relative to the input
        torch.testing.assert_close(
            out.flatten(1), mix.posterior_mean(x, sigma), rtol=1e-9, atol=1e-12 * scale
        )
    sigma = torch.logspace(-3, 2, 32, dtype=F64)  # one per sample
    x = x0 + sigma[:, None] * torch.randn(32, 2, generator=gen, dtype=F64)
    torch.testing.assert_close(
        model(x[:, :, None, None], sigma).flatten(1), mix.posterior_mean(x, sigma), rtol=1e-9, atol=1e-10
    )


@pytest.mark.parametrize("kind", ["edm", "flow"])
def test_backbone_parameters_round_trip_and_get_gradients(kind):
    mix = mixture_2d()
    backbone = MixtureBackbone.from_mixture(mix, kind)
    dist = backbone.distribution()
    for got, want in [(dist.weights, mix.weights), (dist.means, mix.means), (dist.covs, mix.covs)]:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    model = testbed_model(kind, mix)
    x = mix.sample(8, torch.Generator().manual_seed(0))[:, :, None, None]
    model(x + 0.5, 0.5).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name


def test_float32_model_and_random_init():
    model = testbed_model("edm", 2, dim=2, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    mix = model.backbone.distribution()
    assert mix.means.dtype == torch.float32 and not torch.allclose(mix.means, torch.zeros(2, 2))
    torch.testing.assert_close(mix.covs, torch.eye(2).expand(2, 2, 2))  # identity covariances
    x = torch.randn(8, 2, 1, 1, generator=torch.Generator().manual_seed(1))
    exact = mix.to(F64).posterior_mean(x.flatten(1).double(), 0.8).float()
    torch.testing.assert_close(model(x, 0.8).flatten(1), exact, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError):
        testbed_model("edm", 2)  # a random init needs dim


# ----------------------------------------------------------------------------------------------
# pirf's own training and sampling on the test bed


@pytest.mark.parametrize("kind", ["edm", "flow"])
def test_train_testbed_base_recovers_a_gaussian(kind):
    data = GaussianMixture.gaussian(t64([0.5, -0.3]), t64([[1.0, 0.4], [0.4, 0.5]]))
    model = testbed_model(kind, 1, dim=2, generator=torch.Generator().manual_seed(3))
    start = model.backbone.distribution()
    assert (start.mean() - data.mean()).abs().max() > 0.2  # a real fit, not a lucky start
    history = train_testbed_base(model, data, steps=400, batch_size=1024, lr=0.05, seed=0)
    assert len(history) == 400 and all(math.isfinite(v) for v in history)
    fit = model.backbone.distribution()
    assert (fit.mean() - data.mean()).abs().max().item() < 0.05
    assert ((fit.cov() - data.cov()).abs() / data.cov().abs()).max().item() < 0.10
    assert sum(history[-50:]) < sum(history[:50])


def gaussian_transport(mean, cov, x_t, sigma_max):
    """The exact probability-flow map of N(mean, cov) from sigma_max to 0:
    x0 = mean + cov^{1/2} (cov + sigma_max^2 I)^{-1/2} (x_T - mean)."""
    lam, q = torch.linalg.eigh(cov)
    gain = q @ torch.diag((lam / (lam + sigma_max**2)).sqrt()) @ q.T
    return mean + (x_t - mean) @ gain.T


@pytest.mark.parametrize("kind", ["edm", "flow"])
def test_heun_samples_a_known_gaussian(kind):
    """End-to-end sign and scale conventions: sampler + wrapper + backbone. Heun (chain started
    at sigmas[0] * noise) converges at second order to the exact ODE map, and the samples have
    the Gaussian's moments."""
    mean, cov = t64([0.5, -0.3]), t64([[1.0, 0.4], [0.4, 0.5]])
    model = testbed_model(kind, GaussianMixture.gaussian(mean, cov))
    noise = torch.randn(20_000, 2, 1, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    errors = []
    with torch.no_grad():
        for n in (16, 32, 64):
            batch = noise if n == 64 else noise[:1000]
            sigmas = karras_sigmas(n)
            x0 = sample_heun(model, batch, sigmas).x0.flatten(1)
            exact = gaussian_transport(mean, cov, sigmas[0] * batch.flatten(1), sigmas[0].item())
            errors.append((x0[:1000] - exact[:1000]).abs().max().item())
    assert errors[2] < 0.02
    assert math.log2(errors[0] / errors[1]) > 1.7 and math.log2(errors[1] / errors[2]) > 1.7
    got_mean, got_cov = moments(x0)
    assert (got_mean - mean).abs().max().item() < 0.03  # 20k samples: standard error ~0.007
    assert ((got_cov - cov).abs() / cov).max().item() < 0.05


def test_heun_samples_a_two_mode_mixture():
    mix = GaussianMixture(
        t64([0.3, 0.7]), t64([[-1.5, 0.0], [1.5, 0.0]]), t64([[0.3, 0.0], [0.0, 0.2]]).expand(2, 2, 2)
    )
    model = testbed_model("edm", mix)
    noise = torch.randn(10_000, 2, 1, 1, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad():
        x0 = sample_heun(model, noise, karras_sigmas(64)).x0.flatten(1)
    assert (x0[:, 0] > 0).double().mean().item() == pytest.approx(0.7, abs=0.02)
    got_mean, got_cov = moments(x0)
    torch.testing.assert_close(got_mean, mix.mean(), rtol=0, atol=0.04)
    torch.testing.assert_close(got_cov, mix.cov(), rtol=0, atol=0.06)


# ----------------------------------------------------------------------------------------------
# helpers


def test_rewards_on_fields():
    x = t64([[1.0, 2.0], [-1.0, 0.5]])[:, :, None, None]
    torch.testing.assert_close(LinearReward(t64([0.5, -1.0]))(x), t64([-1.5, -1.0]))
    torch.testing.assert_close(QuadraticReward(t64([1.0, 0.0]), k=2.0)(x), t64([-4.0, -4.25]))


def test_gaussian_kl_and_monte_carlo_kl():
    m0, c0 = t64([0.0, 0.0]), t64([[1.0, 0.2], [0.2, 0.5]])
    m1, c1 = t64([0.5, -0.2]), t64([[0.8, 0.0], [0.0, 0.9]])
    assert gaussian_kl(m0, c0, m0, c0).abs().item() < 1e-14
    one_d = gaussian_kl(t64([0.0]), t64([[1.0]]), t64([1.0]), t64([[4.0]]))
    assert one_d.item() == pytest.approx(math.log(2) + (1 + 1) / 8 - 0.5, rel=1e-12)
    p, q = GaussianMixture.gaussian(m0, c0), GaussianMixture.gaussian(m1, c1)
    mc = kl_monte_carlo(p, q, 200_000, torch.Generator().manual_seed(0))
    assert mc.item() == pytest.approx(gaussian_kl(m0, c0, m1, c1).item(), abs=0.01)
