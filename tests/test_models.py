"""Models: EDM preconditioning and loss against closed forms, the flow <-> EDM map, the U-Net
backbone (float conditioning, periodic equivariance, size), and measured parameter selection."""

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from pirf.errors import ConfigError, ShapeError
from pirf.models import (
    Denoiser,
    DenoiserLike,
    FlowDenoiser,
    UNetConfig,
    edm_loss,
    flow_matching_loss,
    make_unet,
    module_resolutions,
    parameter_owners,
    select_parameters,
    sigma_to_t,
    t_to_sigma,
)

SD = 0.5


def _field(batch=3, channels=2, res=16, seed=0, dtype=torch.float32):
    return torch.randn(batch, channels, res, res, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class DeltaBackbone(nn.Module):
    """The exact F for data concentrated at x0*: D(x, sigma) = x0* for every x and sigma."""

    def __init__(self, x0_star: torch.Tensor, sigma_data: float = SD):
        super().__init__()
        self.x0_star, self.sd = x0_star, sigma_data
        self.channels, self.resolution = x0_star.shape[1], x0_star.shape[-1]

    def forward(self, x_in, c_noise):
        sigma = (4 * c_noise).exp().reshape(-1, 1, 1, 1)  # c_noise = ln(sigma) / 4
        x = x_in * (sigma**2 + self.sd**2).sqrt()  # undo c_in
        c_skip = self.sd**2 / (sigma**2 + self.sd**2)
        c_out = sigma * self.sd / (sigma**2 + self.sd**2).sqrt()
        return (self.x0_star - c_skip * x) / c_out


class DeltaVelocity(nn.Module):
    """The exact velocity for data at x0*: v(x_t, t) = E[eps - x0 | x_t] = (x_t - x0*) / t."""

    def __init__(self, x0_star: torch.Tensor):
        super().__init__()
        self.x0_star = x0_star
        self.channels, self.resolution = x0_star.shape[1], x0_star.shape[-1]

    def forward(self, x_t, t):
        return (x_t - self.x0_star) / t.reshape(-1, 1, 1, 1)


class ZeroBackbone(nn.Module):
    channels, resolution = 1, 4

    def forward(self, x, c):
        return torch.zeros_like(x)


class HalfSizeBackbone(ZeroBackbone):
    def forward(self, x, c):
        return x[..., ::2, ::2]


@pytest.fixture(scope="module")
def unet32():
    torch.manual_seed(0)
    return make_unet(2, 32)


# --- EDM preconditioning -------------------------------------------------------------------


def test_preconditioning_matches_edm_table_1():
    den = Denoiser(ZeroBackbone(), sigma_data=SD)
    for s in [0.002, 0.1, 0.5, 3.0, 80.0]:
        c_skip, c_out, c_in, c_noise = den.preconditioning(torch.tensor(s, dtype=torch.float64))
        assert c_skip.item() == pytest.approx(SD**2 / (s**2 + SD**2), rel=1e-12)
        assert c_out.item() == pytest.approx(s * SD / math.sqrt(s**2 + SD**2), rel=1e-12)
        assert c_in.item() == pytest.approx(1 / math.sqrt(s**2 + SD**2), rel=1e-12)
        assert c_noise.item() == pytest.approx(math.log(s) / 4, rel=1e-12)


def test_denoiser_is_identity_as_sigma_goes_to_zero(unet32):
    den = Denoiser(unet32)
    x = _field(2, 2, 32)
    assert (den(x, 1e-4) - x).abs().max() < 1e-3
    assert torch.equal(den(x, 0.0), x)  # the limit itself: finite, exact
    assert isinstance(den, DenoiserLike)


def test_sigma_may_be_float_scalar_or_per_sample(unet32):
    den = Denoiser(unet32)
    x = _field(2, 2, 32)
    out = den(x, 0.7)
    for sigma in [torch.tensor(0.7), torch.full((2,), 0.7), torch.full((2, 1, 1, 1), 0.7)]:
        torch.testing.assert_close(den(x, sigma), out)
    per_sample = den(x, torch.tensor([0.7, 5.0]))
    torch.testing.assert_close(per_sample[0], out[0])
    with pytest.raises(ShapeError, match="batch of 2"):
        den(x, torch.ones(3))


def test_zero_backbone_loss_is_one_for_data_of_variance_sigma_data_squared():
    # F = 0 gives D = c_skip x; E[lambda (c_skip x - x0)^2] = (sigma^2 E[x0^2] / sd^2 + sd^2) /
    # (sigma^2 + sd^2) = 1 at every sigma when E[x0^2] = sd^2 -- the unit-variance target of EDM.
    x0 = SD * torch.randn(4096, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss = edm_loss(Denoiser(ZeroBackbone()), x0, torch.Generator().manual_seed(2))
    assert loss.item() == pytest.approx(1.0, abs=0.05)


def test_edm_loss_vanishes_for_the_exact_denoiser_of_a_point_mass():
    x0_star = _field(1, 2, 8, dtype=torch.float64)
    den = Denoiser(DeltaBackbone(x0_star))
    x = _field(4, 2, 8, seed=3, dtype=torch.float64)
    torch.testing.assert_close(den(x, torch.tensor([0.01, 0.3, 2.0, 80.0])), x0_star.expand(4, -1, -1, -1))
    loss = edm_loss(den, x0_star.expand(64, -1, -1, -1), torch.Generator().manual_seed(0))
    assert loss.item() < 1e-18


def test_shape_errors_name_the_expected_shape(unet32):
    den = Denoiser(unet32)
    with pytest.raises(ShapeError, match=r"\[B, 2, H, W\]"):
        den(torch.zeros(2, 32, 32), 1.0)
    with pytest.raises(ShapeError, match=r"\[B, 2, H, W\]"):
        den(torch.zeros(2, 3, 32, 32), 1.0)
    with pytest.raises(ShapeError, match=r"\[B, 2, H, W\]"):
        edm_loss(den, torch.zeros(2, 1, 32, 32))
    with pytest.raises(ShapeError, match="shaped like its input"):
        Denoiser(HalfSizeBackbone())(torch.zeros(1, 1, 4, 4), 1.0)
    with pytest.raises(ConfigError, match="channels"):
        Denoiser(nn.Identity())


# --- flow matching behind the EDM call -----------------------------------------------------


def test_sigma_t_map_round_trips_and_maps_the_states():
    sigma = torch.logspace(-3, 2, 11, dtype=torch.float64)
    torch.testing.assert_close(t_to_sigma(sigma_to_t(sigma)), sigma)
    t = torch.linspace(0.01, 0.99, 11, dtype=torch.float64)
    torch.testing.assert_close(sigma_to_t(t_to_sigma(t)), t)
    x0, eps = _field(1, 1, 4, seed=0, dtype=torch.float64), _field(1, 1, 4, seed=1, dtype=torch.float64)
    s = torch.tensor(1.7, dtype=torch.float64)
    tt = sigma_to_t(s)
    torch.testing.assert_close((x0 + s * eps) / (1 + s), (1 - tt) * x0 + tt * eps)  # x_t = x / (1 + sigma)


def test_flow_denoiser_returns_the_point_mass_for_any_sigma():
    x0_star = _field(1, 2, 8, dtype=torch.float64)
    flow = FlowDenoiser(DeltaVelocity(x0_star))
    x = _field(3, 2, 8, seed=5, dtype=torch.float64)
    for sigma in [1e-3, 0.5, 80.0, torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)]:
        torch.testing.assert_close(flow(x, sigma), x0_star.expand(3, -1, -1, -1))
    batch = x0_star.expand(32, -1, -1, -1)
    for time_sampling in ["uniform", "logit-normal"]:
        loss = flow_matching_loss(flow, batch, torch.Generator().manual_seed(0), time_sampling=time_sampling)
        assert loss.item() < 1e-20
    with pytest.raises(ConfigError, match="time_sampling"):
        flow_matching_loss(flow, batch, time_sampling="cosine")


def test_flow_denoiser_on_a_unet_is_a_denoiser_like(unet32):
    flow = FlowDenoiser(unet32)
    x = _field(2, 2, 32)
    assert isinstance(flow, DenoiserLike) and flow(x, 2.0).shape == x.shape
    assert torch.equal(flow(x, 0.0), x)
    with pytest.raises(ShapeError, match=r"\[B, 2, H, W\]"):
        flow(x[:, :1], 1.0)


# --- the U-Net backbone --------------------------------------------------------------------


def test_small_unet_is_small_and_takes_negative_float_conditioning(unet32):
    assert sum(p.numel() for p in unet32.parameters()) < 2_000_000
    x = _field(1, 2, 32)
    with torch.no_grad():
        out = unet32(x, -0.3)
        torch.testing.assert_close(unet32(x, torch.tensor([-0.3])), out)
        assert (out - unet32(x, 0.0)).abs().max() > 1e-4  # -0.3 was not truncated to 0
        assert (out - unet32(x, 0.3)).abs().max() > 1e-4  # and is not confused with +0.3


@pytest.mark.parametrize("periodic, shifts", [("xy", (4, 8)), ("x", (0, 12))])
def test_periodic_unet_is_shift_equivariant(periodic, shifts):
    torch.manual_seed(0)
    net = make_unet(1, 32, periodic=periodic)  # 3 levels: shifts by multiples of 4 commute exactly
    x = _field(2, 1, 32)
    with torch.no_grad():
        rolled = net(x.roll(shifts, dims=(2, 3)), 0.1)
        torch.testing.assert_close(rolled, net(x, 0.1).roll(shifts, dims=(2, 3)), atol=1e-5, rtol=0)


def test_padding_kind_is_what_breaks_equivariance():
    torch.manual_seed(0)
    x = _field(1, 1, 32)
    for periodic, shifts in [(None, (0, 4)), ("x", (4, 0))]:  # zero padding on the shifted axis
        net = make_unet(1, 32, periodic=periodic)
        with torch.no_grad():
            error = (net(x.roll(shifts, dims=(2, 3)), 0.1) - net(x, 0.1).roll(shifts, dims=(2, 3))).abs()
        assert error.max() > 1e-3
    keys = make_unet(1, 32, periodic="xy").state_dict().keys()
    assert keys == make_unet(1, 32).state_dict().keys()  # periodic weights load into plain nets


def test_unet_config_checks_and_json_round_trip():
    with pytest.raises(ConfigError, match="divisible"):
        make_unet(1, 30)
    with pytest.raises(ConfigError, match="not levels"):
        make_unet(1, 128, attention_resolutions=(16,))
    with pytest.raises(ConfigError, match="periodic"):
        make_unet(1, 32, periodic="y")
    config = UNetConfig(2, 64, attention_resolutions=(16,), periodic="x")
    assert UNetConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(config)))) == config
    with pytest.raises(ConfigError, match="valid keys"):
        UNetConfig.from_dict({"channels": 1, "resolution": 32, "width": 3})


def test_short_edm_training_lowers_the_loss():
    torch.manual_seed(0)
    den = Denoiser(make_unet(1, 16, base_channels=16, channel_mult=(1, 2)))
    y, x = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    x0 = torch.stack([SD * torch.sin(2 * math.pi * (k * x + y)) for k in range(1, 5)])[:, None]

    def eval_loss():
        return sum(edm_loss(den, x0, torch.Generator().manual_seed(s)).item() for s in range(4))

    before = eval_loss()
    opt = torch.optim.Adam(den.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(100)
    for _ in range(50):
        opt.zero_grad()
        edm_loss(den, x0, gen).backward()
        opt.step()
    after = eval_loss()
    assert after < 0.8 * before, (before, after)


# --- measured parameter selection (PIRF layer-wise truncation) -----------------------------


@pytest.mark.parametrize("res", [32, 64])
@pytest.mark.parametrize("wrapper", [Denoiser, FlowDenoiser])
def test_high_res_selects_full_resolution_decoder_parameters(res, wrapper):
    torch.manual_seed(0)
    model = wrapper(make_unet(2, res))
    x = torch.zeros(1, 2, res, res)
    owners = parameter_owners(model, x)
    high = dict(select_parameters(model, x, "high-res"))
    inverse = dict(select_parameters(model, x, "inverse"))
    everything = dict(select_parameters(model, x, "all"))
    decoder = {n for n, info in owners.items() if info is not None and info.role in ("decoder", "bottleneck")}

    assert high and inverse and not high.keys() & inverse.keys()
    assert high.keys() | inverse.keys() == decoder  # decoder and bottleneck (PIRF's "LT-inverse")
    assert all(owners[n].resolution == res for n in high)
    assert all(owners[n].resolution < res for n in inverse)
    # by name, for this U-Net (levels res, res/2, res/4): the last up block, the upsampler into it
    # (its conv runs at full resolution), and the output head
    unet = "backbone.unet."
    expected = ("up_blocks.2.", "up_blocks.1.upsamplers.", "conv_norm_out.", "conv_out.")
    assert high.keys() == {n for n in everything if n.removeprefix(unet).startswith(expected)}
    time_embedding = {n for n in everything if ".time_embedding." in n}
    assert time_embedding and not time_embedding & (high.keys() | inverse.keys())
    share = sum(p.numel() for p in high.values()) / sum(p.numel() for p in everything.values())
    assert 0.05 < share < 0.5


def test_roles_are_measured_in_execution_order(unet32):
    infos = module_resolutions(unet32, torch.zeros(1, 2, 32, 32))
    assert infos["unet.conv_in"].role == "encoder" and infos["unet.conv_in"].resolution == 32
    assert infos["unet.mid_block"].role == "bottleneck" and infos["unet.mid_block"].resolution == 8
    assert infos["unet.conv_out"].role == "decoder"
    assert infos["unet"].role is None  # spans all three
    assert infos["unet.time_embedding"].resolution is None
    with pytest.raises(ConfigError, match="high-res"):
        select_parameters(unet32, torch.zeros(1, 2, 32, 32), "decoder")


def test_noise_levels_mix_edm_lognormal_with_log_uniform_over_the_sampler_range():
    from pirf.models.denoiser import NoiseLevels

    edm = NoiseLevels().draw(20000, torch.Generator().manual_seed(0), torch.float64, "cpu")
    plain = (
        -1.2
        + 1.2 * torch.randn((20000, 1, 1, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ).exp()
    assert torch.equal(edm, plain)  # the EDM stream is unchanged (resumed runs reproduce)
    uniform = (
        NoiseLevels(log_uniform=1.0).draw(20000, torch.Generator().manual_seed(0), torch.float64, "cpu").log()
    )
    low, high = math.log(0.002), math.log(80.0)
    assert uniform.min() >= low and uniform.max() <= high
    assert (
        abs(float(uniform.mean()) - (low + high) / 2) < 0.1
        and abs(float(uniform.var()) - (high - low) ** 2 / 12) < 0.5
    )
    half = NoiseLevels(log_uniform=0.5).draw(20000, torch.Generator().manual_seed(0), torch.float64, "cpu")
    above_three = float((half > 3).double().mean())  # lognormal: 2.7%; log-uniform: 31%
    assert 0.15 < above_three < 0.19


def test_flow_times_take_the_same_log_uniform_noise_levels_as_edm():
    """A flow's share of log-uniform draws is t = sigma / (1 + sigma) of EDM's draws: with
    sigma_max 400 a quarter of them fall at t > 0.95 (sigma > 19), where uniform t puts 5%."""
    from pirf.models.denoiser import NoiseLevels, sample_flow_times, sigma_to_t

    like = torch.zeros((), dtype=torch.float64)
    plain = sample_flow_times(20000, like, torch.Generator().manual_seed(0))
    same = sample_flow_times(20000, like, torch.Generator().manual_seed(0), levels=NoiseLevels())
    assert torch.equal(plain, same)  # no log-uniform share: the stream is unchanged
    wide = NoiseLevels(log_uniform=1.0, sigma_max=400.0)
    t = sample_flow_times(20000, like, torch.Generator().manual_seed(0), levels=wide)
    sigma = t / (1 - t)
    assert float(t.min()) >= float(sigma_to_t(torch.tensor(0.002))) and float(t.max()) <= 400 / 401
    low, high = math.log(0.002), math.log(400.0)
    assert abs(float(sigma.log().mean()) - (low + high) / 2) < 0.1
    share = float((t > 0.95).double().mean())
    assert abs(share - (high - math.log(19.0)) / (high - low)) < 0.02
    assert abs(float((plain > 0.95).double().mean()) - 0.05) < 0.01
