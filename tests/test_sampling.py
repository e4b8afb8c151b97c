"""Samplers against the exact Gaussian answer, their convergence orders, and one contract for all.

Gaussian data N(mu, s^2 I) have the exact denoiser D(x, sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu)
and the exact probability-flow solution x(sigma) = mu + sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_T^2)
(x_T - mu), so every number below is checked against a closed form, not a golden value.
"""

import itertools
import math

import pytest
import torch
from torch import nn

from conftest import convergence_order
from pirf.errors import ConfigError, ShapeError
from pirf.sampling import (
    SAMPLERS,
    flow_sigmas,
    karras_sigmas,
    per_sample_noise,
    recompute_log_prob,
    recompute_transition,
    sample_ddim,
    sample_euler,
    sample_flow_sde,
    sample_heun,
    sigma_to_t,
    step_log_prob,
)

MU, S = 0.3, 0.5
STOCHASTIC = {"ddim": {"eta": 1.0}, "flow_sde": {"noise_level": 0.7}}
NAMES = sorted(SAMPLERS)


class GaussianDenoiser(nn.Module):
    """The exact denoiser of N(mu, s^2 I) with a learnable mu; logs its calls."""

    def __init__(self, mu: float = MU, s: float = S) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(mu, dtype=torch.float64))
        self.s = s
        self.calls: list[tuple[bool, torch.Tensor, torch.Tensor]] = []  # (grad enabled, sigma, x0_hat)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        assert sigma.shape == (x.shape[0],)
        x0_hat = self.mu + self.s**2 / (self.s**2 + sigma.view(-1, 1, 1, 1) ** 2) * (x - self.mu)
        self.calls.append((torch.is_grad_enabled(), sigma.detach().clone(), x0_hat.detach().clone()))
        return x0_hat


def grid_for(name: str, n: int) -> torch.Tensor:
    return flow_sigmas(n, t_max=0.9) if name == "flow_sde" else karras_sigmas(n, 0.002, 80)


def run(name, denoiser, noise, sigmas, seed=0, **kwargs):
    gens = [torch.Generator().manual_seed(seed + b) for b in range(noise.shape[0])]
    return SAMPLERS[name](denoiser, noise, sigmas, generator=gens, **STOCHASTIC.get(name, {}), **kwargs)


def latent(batch=3, seed=0, shape=(2, 4, 4)):
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- schedules ---------------------------------------------------------------------------------


def test_karras_sigmas_end_points_and_order():
    sigmas = karras_sigmas(10)
    assert sigmas.shape == (11,) and sigmas.dtype == torch.float64
    assert sigmas[0] == 80 and sigmas[-2] == 0.002 and sigmas[-1] == 0
    assert (sigmas[1:] < sigmas[:-1]).all()
    assert karras_sigmas(1).tolist() == [80.0, 0.0]
    assert karras_sigmas(4, dtype=torch.float32).dtype == torch.float32


def test_flow_sigmas_is_a_uniform_t_grid():
    sigmas = flow_sigmas(8, t_max=0.9)
    t = sigma_to_t(sigmas)
    torch.testing.assert_close(t, torch.linspace(0.9, 0.0, 9, dtype=torch.float64))
    assert sigmas[-1] == 0


@pytest.mark.parametrize(
    "kwargs", [{"n": 0}, {"n": 5, "sigma_min": 0.0}, {"n": 5, "sigma_min": 90.0}, {"n": 5, "rho": 0}]
)
def test_karras_sigmas_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        karras_sigmas(**kwargs)


# ---- convergence orders ---------------------------------------------------------------------------


@pytest.mark.parametrize(("sampler", "order"), [(sample_euler, 1.0), (sample_heun, 2.0)])
def test_convergence_order_on_gaussian_data(sampler, order):
    sigma_max, sigma_min = 10.0, 0.05  # stop at sigma_min > 0: the last step to 0 would hide the order
    noise = latent()
    exact = MU + math.sqrt(S**2 + sigma_min**2) / math.sqrt(S**2 + sigma_max**2) * (sigma_max * noise - MU)
    steps = [8, 16, 32]
    errors = []
    for n in steps:
        sigmas = karras_sigmas(n + 1, sigma_min, sigma_max)[:-1]  # n steps sigma_max -> sigma_min
        out = sampler(GaussianDenoiser(), noise, sigmas)
        errors.append((out.x0 - exact).abs().max().item())
    assert abs(convergence_order(errors, steps) - order) < 0.25


def test_heun_makes_2n_minus_1_calls_to_zero():
    assert sample_heun(GaussianDenoiser(), latent(), karras_sigmas(6)).nfe == 11


# ---- the contract every sampler keeps ---------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_shape_nfe_and_final_sigma_zero(name):
    sigmas, noise, den = grid_for(name, 6), latent(), GaussianDenoiser()
    out = run(name, den, noise, sigmas, return_trajectory=True)
    assert out.x0.shape == noise.shape and out.x0.dtype == noise.dtype
    assert out.nfe == len(den.calls) == (11 if name == "heun" else 6)
    assert len(out.trajectory) == 7 and torch.equal(out.trajectory[0], sigmas[0] * noise)
    assert all(bool((sigma > 0).all()) for _, sigma, _ in den.calls)  # never called at sigma = 0
    torch.testing.assert_close(out.x0, den.calls[-1][2])  # the step to sigma = 0 lands on x0_hat


@pytest.mark.parametrize("name", NAMES)
def test_reproducible_with_the_same_seeds(name):
    sigmas, noise = grid_for(name, 6), latent()
    a = run(name, GaussianDenoiser(), noise, sigmas, seed=1).x0
    b = run(name, GaussianDenoiser(), noise, sigmas, seed=1).x0
    assert torch.equal(a, b)
    if name in STOCHASTIC:
        assert not torch.equal(a, run(name, GaussianDenoiser(), noise, sigmas, seed=2).x0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [1, 3])
def test_gradients_flow_only_through_the_window(name, k):
    n, den = 5, GaussianDenoiser()
    noise = latent().requires_grad_(True)
    out = run(name, den, noise, grid_for(name, n), grad_steps=k)
    out.x0.pow(2).mean().backward()
    assert den.mu.grad is not None and den.mu.grad.abs() > 0
    assert noise.grad is None  # the state entering the window is detached
    with_grad = [flag for flag, _, _ in den.calls]
    expected = 2 * k - 1 if name == "heun" else k
    assert sum(with_grad) == expected and all(with_grad[-expected:])  # the last calls, corrector included


@pytest.mark.parametrize("name", NAMES)
def test_window_does_not_change_the_numbers(name):
    sigmas, noise = grid_for(name, 5), latent()
    free = run(name, GaussianDenoiser(), noise, sigmas).x0
    windowed = run(name, GaussianDenoiser(), noise, sigmas, grad_steps=2).x0
    torch.testing.assert_close(free, windowed.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_window_edges(name):
    sigmas, den = grid_for(name, 4), GaussianDenoiser()
    assert not run(name, den, latent(), sigmas, grad_steps=0).x0.requires_grad
    noise = latent().requires_grad_(True)
    run(name, den, noise, sigmas, grad_steps=4).x0.sum().backward()  # whole chain: reaches the latent
    assert noise.grad is not None and noise.grad.abs().sum() > 0
    den.calls.clear()
    run(name, den, latent(), sigmas, grad_steps=[False, True, False, True])  # AlignProp-style flags
    per_step = [flag for flag, _, _ in den.calls]
    assert per_step == (
        [False, False, True, True, False, False, True] if name == "heun" else [False, True] * 2
    )
    with torch.no_grad():  # None: the caller's grad mode rules
        assert not run(name, den, latent(), sigmas).x0.requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_are_refused(name):
    sigmas = grid_for(name, 4)
    with pytest.raises(ShapeError):
        run(name, GaussianDenoiser(), latent()[0], sigmas)  # not [B, C, H, W]
    with pytest.raises(ConfigError):
        run(name, GaussianDenoiser(), latent(), sigmas.flip(0))  # increasing
    with pytest.raises(ConfigError):
        run(name, GaussianDenoiser(), latent(), sigmas, grad_steps=5)
    with pytest.raises(ConfigError):
        run(name, GaussianDenoiser(), latent(), sigmas, grad_steps=[True, False])
    with pytest.raises(ShapeError):
        run(name, GaussianDenoiser(), latent(), sigmas[:1])


def test_stochastic_parameters_are_checked():
    with pytest.raises(ConfigError):
        sample_ddim(GaussianDenoiser(), latent(), karras_sigmas(4), eta=1.5)
    with pytest.raises(ConfigError, match="unstable"):  # a^2 (1 + sigma) |dt| / 2 >= 1 on the first step
        sample_flow_sde(GaussianDenoiser(), latent(), flow_sigmas(10, t_max=0.999), noise_level=0.7)
    with pytest.raises(ShapeError):
        sample_ddim(GaussianDenoiser(), latent(3), karras_sigmas(4), generator=[torch.Generator()] * 2)


# ---- stochastic samplers: records, log-probabilities, seeds ----------------------------------------


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_log_prob_is_the_gaussian_density_averaged_over_dims(name):
    out = run(name, GaussianDenoiser(), latent(), grid_for(name, 5))
    assert len(out.records) == 5 and out.records[-1].deterministic and out.records[-1].noise is None
    for rec in out.records[:-1]:
        direct = torch.distributions.Normal(rec.mean, rec.std.view(-1, 1, 1, 1)).log_prob(rec.x_next)
        assert rec.log_prob.shape == (3,)
        torch.testing.assert_close(rec.log_prob, direct.mean(dim=(1, 2, 3)))
        torch.testing.assert_close(rec.x_next, rec.mean + rec.std.view(-1, 1, 1, 1) * rec.noise)
        assert bool((rec.dt < 0).all())


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_recompute_log_prob_same_and_changed_model(name):
    out = run(name, GaussianDenoiser(), latent(), grid_for(name, 5))
    for rec in out.records[:-1]:
        torch.testing.assert_close(recompute_log_prob(GaussianDenoiser(), rec), rec.log_prob)
        changed = recompute_log_prob(GaussianDenoiser(mu=MU + 0.2), rec)
        assert (changed - rec.log_prob).abs().min() > 1e-6
    with pytest.raises(ConfigError):
        recompute_log_prob(GaussianDenoiser(), out.records[-1])


def test_recompute_carries_gradient_to_the_new_model():
    out = sample_ddim(GaussianDenoiser(), latent(), karras_sigmas(4), grad_steps=0, generator=None)
    den = GaussianDenoiser()
    recompute_log_prob(den, out.records[1]).sum().backward()
    assert den.mu.grad is not None and den.mu.grad.abs() > 0
    assert recompute_transition(den, out.records[1]).mean.shape == out.x0.shape


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_sample_depends_only_on_its_own_generator(name):
    sigmas, noise = grid_for(name, 5), latent(batch=3)
    big = SAMPLERS[name](
        GaussianDenoiser(), noise, sigmas, generator=[torch.Generator().manual_seed(s) for s in (7, 8, 9)]
    )
    small = SAMPLERS[name](
        GaussianDenoiser(),
        noise[[2, 0]],
        sigmas,
        generator=[torch.Generator().manual_seed(s) for s in (9, 4)],
    )
    torch.testing.assert_close(big.x0[2], small.x0[0], rtol=0, atol=0)


def test_per_sample_noise_rows():
    rows = per_sample_noise(
        (2, 3, 4), [torch.Generator().manual_seed(s) for s in (1, 2)], dtype=torch.float64
    )
    alone = per_sample_noise((1, 3, 4), [torch.Generator().manual_seed(2)], dtype=torch.float64)
    assert rows.shape == (2, 3, 4) and torch.equal(rows[1], alone[0])


# ---- limits: DDIM eta = 0 and the flow SDE with a -> 0 are the ODE Euler step ----------------------------


def test_ddim_eta_zero_is_euler():
    sigmas, noise = karras_sigmas(8), latent()
    ddim = sample_ddim(GaussianDenoiser(), noise, sigmas, eta=0.0)
    torch.testing.assert_close(ddim.x0, sample_euler(GaussianDenoiser(), noise, sigmas).x0)
    assert all(rec.deterministic for rec in ddim.records)


def flow_ode_euler(noise, t_grid):
    """Rectified-flow Euler in t, written directly: x_t' = x_t + (t' - t) v, v = (x_t - x0_hat) / t."""
    x_t, den = t_grid[0] * noise, GaussianDenoiser()
    for t, t_next in itertools.pairwise(t_grid):
        sigma = (t / (1 - t)).expand(noise.shape[0])
        x0_hat = den(x_t / (1 - t), sigma)  # the denoiser sees the EDM state x = x_t (1 + sigma)
        x_t = x_t + (t_next - t) * (x_t - x0_hat) / t
    return x_t


@pytest.mark.parametrize("a", [0.0, 1e-7])
def test_flow_sde_with_vanishing_noise_is_the_flow_ode_euler_step(a):
    sigmas, noise = flow_sigmas(8, t_max=0.98), latent()
    out = sample_flow_sde(GaussianDenoiser(), noise, sigmas, noise_level=a, generator=torch.Generator())
    reference = flow_ode_euler(noise, torch.linspace(0.98, 0.0, 9, dtype=torch.float64))
    torch.testing.assert_close(out.x0, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(sample_euler(GaussianDenoiser(), noise, sigmas).x0, reference)


def test_flow_sde_step_matches_the_formula_in_t():
    sigmas, a = flow_sigmas(6, t_max=0.9), 0.7
    rec = sample_flow_sde(GaussianDenoiser(), latent(), sigmas, noise_level=a).records[2]
    t, t_next = rec.t.view(-1, 1, 1, 1), sigma_to_t(rec.sigma_next).view(-1, 1, 1, 1)
    x_t, dt = rec.x_t * (1 - t), t_next - t
    v = (x_t - GaussianDenoiser()(rec.x_t, rec.sigma)) / t
    std_t = a * torch.sqrt(t / (1 - t))
    mean_t = (
        x_t * (1 + std_t**2 * dt / (2 * t)) + v * (1 + std_t**2 * (1 - t) / (2 * t)) * dt
    )  # Flow-GRPO's SDE step (Liu et al. 2025, eq. 9)
    torch.testing.assert_close(rec.mean * (1 - t_next), mean_t)
    torch.testing.assert_close(rec.std * (1 - t_next.flatten()), (std_t * torch.sqrt(-dt)).flatten())


@pytest.mark.parametrize(
    ("name", "sigmas"), [("flow_sde", flow_sigmas(100, t_max=0.98)), ("ddim", karras_sigmas(400, 0.002, 80))]
)
def test_stochastic_samplers_keep_the_data_distribution(name, sigmas):
    noise = latent(batch=500, seed=3, shape=(1, 4, 4))
    x0 = run(name, GaussianDenoiser(), noise, sigmas).x0
    assert abs(x0.mean().item() - MU) < 0.02 and abs(x0.std().item() - S) < 0.02


def test_step_log_prob_accepts_scalar_and_per_sample_std():
    mean, x = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    expected = torch.full((2,), -0.5 - 0.5 * math.log(2 * math.pi))
    torch.testing.assert_close(step_log_prob(mean, 1.0, x), expected)
    torch.testing.assert_close(step_log_prob(mean, torch.ones(2), x), expected)
