"""Inference-time guidance (DPS, CoCoGen) and PIDM's loss: closed forms, where the gradient is
taken, what it costs, and clear errors."""

import math

import pytest
import torch

import pirf.pdes as pdes
from pirf.errors import ConfigError, NonFiniteError
from pirf.models.denoiser import edm_draw, edm_loss
from pirf.normalization import Normalization
from pirf.rewards import ResidualReward
from pirf.sampling import karras_sigmas, sample_heun
from pirf.sampling.guidance import Guidance, cocogen_correct, loss_gradient, sample_heun_dps
from pirf.training.pidm import pidm_loss


class PointMass(torch.nn.Module):
    """The exact denoiser of data concentrated at x* (D(x, sigma) = x*), with EDM's attributes."""

    sigma_data, channels, resolution = 1.0, 1, 4

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target = target
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x, sigma):
        return self.scale * self.target.expand_as(x) + 0 * x


def half_square_distance(center):
    return lambda x: 0.5 * (x - center).pow(2).sum(dim=(1, 2, 3))


def test_the_last_fifth_of_the_steps_is_guided():
    g = Guidance(lambda x: x.sum(dim=(1, 2, 3)), zeta=1.0)
    assert g.guided(20) == [False] * 16 + [True] * 4
    assert sum(Guidance(g.loss, 1.0, fraction=0.5).guided(10)) == 5


def test_zero_step_size_is_plain_heun():
    den = PointMass(torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0)))
    noise = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    sigmas = karras_sigmas(6)
    plain = sample_heun(den, noise, sigmas)
    guided = sample_heun_dps(den, noise, sigmas, Guidance(half_square_distance(0.0), zeta=0.0))
    torch.testing.assert_close(guided.x0, plain.x0)
    assert guided.nfe == plain.nfe


def test_dps_step_is_the_gradient_through_the_denoiser_at_the_step_start():
    """Guiding only the last step (to sigma = 0) of a point-mass model: x0 = x* exactly without
    guidance, and the guidance moves it by -zeta grad_x ||D(x) - c||^2/2 = 0 (D does not depend
    on x); with D(x) = x (sigma -> identity denoiser) it moves by -zeta (x_{N-1} - c)."""
    target = torch.full((1, 1, 4, 4), 2.0)
    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    sigmas = karras_sigmas(5)
    guidance = Guidance(half_square_distance(0.0), zeta=0.3, fraction=0.2)  # the last 1 of 5 steps
    out = sample_heun_dps(PointMass(target), noise, sigmas, guidance)
    torch.testing.assert_close(out.x0, target.expand(2, -1, -1, -1))
    assert out.nfe == 2 * 5 - 1 + 1  # one extra network call (with its backward) per guided step

    def identity(x, sigma):
        return x

    traj = sample_heun(identity, noise, sigmas, return_trajectory=True).trajectory
    guided = sample_heun_dps(identity, noise, sigmas, guidance)
    torch.testing.assert_close(guided.x0, traj[-1] - 0.3 * traj[-2])


def test_guidance_pulls_samples_toward_lower_loss():
    noise = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    sigmas = karras_sigmas(10)

    def shrink(x, sigma):  # a Gaussian N(0, I) data model: D(x, sigma) = x / (1 + sigma^2)
        return x / (1 + sigma.view(-1, 1, 1, 1) ** 2)

    loss = half_square_distance(torch.ones(1, 1, 4, 4))
    plain = loss(sample_heun(shrink, noise, sigmas).x0)
    guided = loss(sample_heun_dps(shrink, noise, sigmas, Guidance(loss, zeta=0.2, fraction=0.5)).x0)
    assert (guided < plain).all()


def test_cocogen_corrections_follow_gradient_descent_in_closed_form():
    """For loss ||x - c||^2 / 2 the M corrections give x_M = c + (1 - zeta)^M (x_0 - c)."""
    x = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    c = torch.full((1, 2, 4, 4), 0.5)
    out = cocogen_correct(x, half_square_distance(c), zeta=0.25, steps=3)
    torch.testing.assert_close(out, c + 0.75**3 * (x - c))
    assert torch.equal(cocogen_correct(x, half_square_distance(c), zeta=0.25, steps=0), x)


def test_guidance_errors_are_clear():
    with pytest.raises(ConfigError, match="zeta"):
        Guidance(lambda x: x.sum(), zeta=-1.0)
    with pytest.raises(ConfigError, match="fraction"):
        Guidance(lambda x: x.sum(), zeta=1.0, fraction=1.5)
    x = torch.ones(2, 1, 4, 4)
    with pytest.raises(NonFiniteError, match="lower zeta"):
        loss_gradient(lambda x: (x * math.inf).sum(dim=(1, 2, 3)), x)
    with pytest.raises(Exception, match="one number per sample"):
        loss_gradient(lambda x: x.sum(), x)


def test_residual_norm_is_the_l2_norm_of_the_residual():
    pde = pdes.get("poisson")
    x = torch.randn(3, 2, 16, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    reward = ResidualReward(pde)
    squared = pde.residual(reward.prepare(x)).pow(2)
    torch.testing.assert_close(reward.residual_norm(x), squared.sum(dim=(1, 2)).sqrt())
    torch.testing.assert_close(reward.residual_mse(x), squared.mean(dim=(1, 2)))


def test_pidm_loss_is_edm_plus_the_weighted_residual_of_the_denoised_estimate(tiny_poisson_model):
    from pirf.models.loading import load_model

    model, record, _ = load_model(tiny_poisson_model)
    pde, norm = pdes.get("poisson"), Normalization.from_dict(record["normalization"])
    x0 = torch.randn(4, 2, 16, 16, generator=torch.Generator().manual_seed(7))
    mse = ResidualReward(pde).residual_mse
    with torch.no_grad():
        plain = edm_loss(model, x0, torch.Generator().manual_seed(8))
        unweighted, _ = pidm_loss(model, x0, mse, norm, 0.0, torch.Generator().manual_seed(8))
        total, physics = pidm_loss(model, x0, mse, norm, 0.5, torch.Generator().manual_seed(8))
        draw = edm_draw(model, x0, torch.Generator().manual_seed(8))
    expected = (mse(norm.denormalize(draw.x0_hat)) / (2 * draw.sigma.flatten())).mean()
    torch.testing.assert_close(unweighted, plain)
    torch.testing.assert_close(physics, expected)
    torch.testing.assert_close(total, plain + 0.5 * expected)


def _physics_term(model, x0, mse, norm) -> float:
    with torch.no_grad():
        terms = [pidm_loss(model, x0, mse, norm, 0.0, torch.Generator().manual_seed(s))[1] for s in range(8)]
    return float(torch.stack(terms).mean())


def test_pidm_training_lowers_the_residual_of_the_denoised_estimates(tiny_poisson_model, tmp_path):
    """Against the same continuation without the physics term (which lowers it too: the tiny
    model is under-trained), PIDM's term must make the difference."""
    from pirf.data import FieldDataset
    from pirf.models.loading import load_model
    from pirf.training import DataConfig, PretrainConfig, pretrain

    record = load_model(tiny_poisson_model)[1]
    data = FieldDataset(record["config"]["data"]["path"])
    x0 = torch.stack([data[i] for i in range(16)])
    mse, norm = ResidualReward(data.pde).residual_mse, data.info.normalization
    terms = {}
    for weight in (0.0, 1.0):
        cfg = PretrainConfig(
            data=DataConfig(path=str(data.info.path)),
            out=str(tmp_path / f"run-{weight}"),
            init=str(tiny_poisson_model),
            physics_weight=weight,
            steps=40,
            batch_size=16,
            lr=1e-3,
            warmup_steps=1,
            ema_halflife_samples=16.0,
            log_every=10,
            checkpoint_every=40,
        )
        pretrain(cfg, progress=False)
        tuned, tuned_record, _ = load_model(tmp_path / f"run-{weight}" / "model.safetensors")
        assert tuned_record["config"]["init"] == str(tiny_poisson_model)
        terms[weight] = _physics_term(tuned, x0, mse, norm)
    assert terms[1.0] < 0.8 * terms[0.0]


def test_pidm_refuses_a_model_of_other_data(tiny_poisson_model, tmp_path):
    from pirf.models.loading import load_model
    from pirf.training import DataConfig, PretrainConfig, pretrain

    record = load_model(tiny_poisson_model)[1]
    cfg = PretrainConfig(
        data=DataConfig(path=record["config"]["data"]["path"]), out=str(tmp_path / "x"), init="darcy"
    )
    with pytest.raises(ConfigError, match="trained on darcy"):
        pretrain(cfg, progress=False)
