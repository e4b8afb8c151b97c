"""The reward-score-matching family's building blocks: advantages, the PPO clip, the KL term, the
lean adjoint against backprop through the chain, the zeroth-order estimator against the first-order
gradient (Stein's lemma), GRPO's shared starting noise."""

import math

import pytest
import torch

from pirf.errors import ConfigError
from pirf.finetune.config import FinetuneConfig, PolicyConfig, SamplerConfig
from pirf.finetune.policy import advantages, mean_kl, policy_sampler, ppo_terms, trained_steps
from pirf.finetune.registry import make_method
from pirf.finetune.regression import gamma_weight, lean_adjoints, zeroth_order_estimate
from pirf.finetune.seeds import seeded_rollout
from pirf.sampling import ddim_transition, karras_sigmas, sample_ddim


def test_ddpo_advantages_are_batch_standardized_and_clipped():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    a = advantages(values, group_size=1, clip=100.0)
    assert abs(float(a.mean())) < 1e-6 and abs(float(a.std(unbiased=False)) - 1) < 1e-5
    assert float(advantages(values, group_size=1, clip=1.5).max()) == 1.5


def test_grpo_advantages_are_relative_to_their_group():
    values = torch.tensor([1.0, 3.0, 10.0, 30.0])
    a = advantages(values, group_size=2, clip=5.0)
    # each group (1, 3) and (10, 30) has mean-centred values +-1 std: +-1 / (1 + 1e-4 / std)
    assert torch.allclose(a, torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=1e-3)
    with pytest.raises(ConfigError, match="groups of 3"):
        advantages(values, group_size=3, clip=5.0)


def test_ppo_clip_stops_the_gradient_outside_the_trust_region():
    old = torch.zeros(2)
    advantage = torch.tensor([1.0, -1.0])
    inside = torch.full((2,), 1e-5, requires_grad=True)
    loss, active = ppo_terms(inside, old, advantage, clip=1e-4)
    (grad,) = torch.autograd.grad(loss.sum(), inside)
    assert torch.allclose(grad, -advantage * torch.exp(inside.detach())) and not active.any()
    beyond = torch.tensor([1e-3, -1e-3], requires_grad=True)  # ratio pushed past 1 +- eps in A's favour
    loss, active = ppo_terms(beyond, old, advantage, clip=1e-4)
    (grad,) = torch.autograd.grad(loss.sum(), beyond)
    assert torch.equal(grad, torch.zeros(2)) and active.all()


def test_mean_kl_is_the_gaussian_kl_per_dimension():
    mean, base = torch.zeros(3, 2, 4, 4), torch.full((3, 2, 4, 4), 0.3)
    std = torch.tensor([0.1, 0.2, 0.5])
    assert torch.allclose(mean_kl(mean, base, std), 0.09 / (2 * std**2))


def test_timestep_share_and_gamma_weights():
    rng = __import__("numpy").random.default_rng(0)
    assert trained_steps(5, 1.0, rng) == [0, 1, 2, 3, 4]
    chosen = trained_steps(10, 0.3, rng)
    assert len(chosen) == 3 and len(set(chosen)) == 3
    sigma = torch.tensor([0.01, 0.5, 80.0])
    snr, inverse = gamma_weight("snr", sigma, 0.5), gamma_weight("inverse-snr", sigma, 0.5)
    assert torch.allclose(snr + inverse, torch.ones(3)) and snr[0] > 0.99 and snr[-1] < 1e-4


def _nonlinear_denoiser(x, sigma):
    s = sigma.reshape(-1, 1, 1, 1)
    return torch.tanh(0.8 * x) / (1 + 0.1 * s) + 0.05 * x.roll(1, dims=-1)


def test_lean_adjoint_is_backprop_through_the_chain_with_its_noise_fixed():
    """a_k = (d x_N / d x_k)^T a_N with the injected noise held fixed (reparametrized)."""
    torch.manual_seed(0)
    sigmas = karras_sigmas(6).double()
    noise = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    out = sample_ddim(_nonlinear_denoiser, noise, sigmas, eta=1.0, generator=torch.Generator().manual_seed(1))
    records = out.records
    terminal = torch.randn_like(out.x0)
    adjoints = lean_adjoints(_nonlinear_denoiser, records, terminal)
    assert len(adjoints) == len(records) + 1 and torch.equal(adjoints[-1], terminal)
    for k in range(len(records)):
        start = records[k].x_t.detach().requires_grad_(True)
        x = start
        for record in records[k:]:
            step = ddim_transition(_nonlinear_denoiser, x, record.sigma, record.sigma_next, 1.0)
            x = (
                step.mean
                if record.noise is None
                else step.mean + record.std.reshape(-1, 1, 1, 1) * record.noise
            )
        assert torch.allclose(x, out.x0)  # the replay reproduces the chain
        (expected,) = torch.autograd.grad(x, start, grad_outputs=terminal)
        assert torch.allclose(adjoints[k], expected, atol=1e-12), k


def _gaussian_denoiser(mean: float, std: float):
    def denoise(x, sigma):
        s = sigma.reshape(-1, 1, 1, 1)
        return mean + std**2 / (std**2 + s**2) * (x - mean)

    return denoise


def test_zeroth_order_estimate_matches_the_chain_gradient_in_expectation():
    """Stein's lemma: E[(f - b) z / std] at step k = E[d f(x_N) / d x_{k+1}], which for a linear f
    is the lean adjoint (times -alpha): the sign conventions of both estimators agree."""
    denoise = _gaussian_denoiser(0.3, 0.7)
    sigmas = karras_sigmas(8).double()
    n, w = 40_000, 1.5
    noise = torch.randn(n, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample_ddim(denoise, noise, sigmas, eta=1.0, generator=torch.Generator().manual_seed(1))
    values = w * out.x0.reshape(-1)
    adjoints = lean_adjoints(denoise, out.records, torch.full_like(out.x0, -w))  # a_N = -grad f (alpha 1)
    for k, record in enumerate(out.records[:-1]):
        estimate = zeroth_order_estimate(values, values.mean(), record).mean()
        exact = -adjoints[k + 1].mean()  # at x_{k+1}; linear chain: the same at every state
        spread = float(((values - values.mean()).std() / record.std.mean()) / math.sqrt(n))
        assert abs(float(estimate) - float(exact)) < 4 * spread + 1e-3, (k, float(estimate), float(exact))
    with pytest.raises(ConfigError, match="injected no noise"):
        zeroth_order_estimate(values, values.mean(), out.records[-1])


def test_grpo_groups_share_their_starting_noise_and_not_their_injected_noise():
    rollout = seeded_rollout(
        3, 7, list(range(8)), 4, (1, 2, 2), denoiser=None, sigmas=None, reward=None, normalization=None
    )
    assert torch.equal(rollout.noise[0], rollout.noise[3]) and not torch.equal(
        rollout.noise[3], rollout.noise[4]
    )
    draws = [torch.randn(3, generator=g) for g in rollout.generators]
    assert not torch.equal(draws[0], draws[1])
    single = seeded_rollout(
        3, 7, [5], 1, (1, 2, 2), denoiser=None, sigmas=None, reward=None, normalization=None
    )
    assert not torch.equal(single.noise[0], rollout.noise[5])  # ungrouped row 5 has its own seed


def test_policy_sampler_follows_the_model_kind_and_checks_its_settings():
    cfg = FinetuneConfig(method="ddpo", sampler=SamplerConfig(steps=30))
    assert policy_sampler(cfg, "edm").kind == "ddim" and policy_sampler(cfg, "edm").noise_level == 1.0
    flow = policy_sampler(cfg, "flow")
    assert flow.kind == "flow_sde" and flow.noise_level == 0.7 and flow.sigmas.shape == (31,)
    with pytest.raises(ConfigError, match="noise_level"):
        policy_sampler(FinetuneConfig(policy=PolicyConfig(sampler="ddim", noise_level=1.5)), "edm")
    with pytest.raises(ConfigError, match="memoryless"):
        make_method(FinetuneConfig(method="adjoint-matching", policy=PolicyConfig(sampler="flow_sde")), "edm")
