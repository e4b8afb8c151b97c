"""Denoisers: EDM preconditioning around a backbone, and a flow-matching model behind the same call.

Every sampler and fine-tuner in pirf talks to a model through one call,

    D(x, sigma) -> x0_hat,        x = x0 + sigma n,   n ~ N(0, I),

the denoised estimate of the clean (normalized) field at noise level sigma (Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", EDM, Sec. 2). `Denoiser`
builds D from a raw backbone F with EDM's preconditioning (Table 1); `FlowDenoiser` builds it from
a rectified-flow velocity model (Liu et al. 2023; Lipman et al. 2023) through the change of
variables sigma = t / (1 - t), x_t = x / (1 + sigma).

Shapes: x is ``[B, C, H, W]``; sigma is a float, a 0-d tensor, or a ``[B]`` (or ``[B, 1, 1, 1]``)
tensor. No value checks on sigma (they would synchronize inside differentiable loops): sigma must
be >= 0; sigma = 0 returns x exactly (the limit of both maps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from pirf.errors import ConfigError, ShapeError

TimeSampling = Literal["uniform", "logit-normal"]


@runtime_checkable
class DenoiserLike(Protocol):
    """What samplers and fine-tuners need: ``D(x, sigma) -> x0_hat`` and three facts about the model.

    ``sigma_data`` is the data's standard deviation the model assumes (EDM: 0.5 for normalized
    data), ``channels`` and ``resolution`` the field layout ``[B, channels, resolution, resolution]``.
    """

    sigma_data: float
    channels: int
    resolution: int

    def __call__(self, x: Tensor, sigma: float | Tensor) -> Tensor: ...


class Backbone(Protocol):
    """A raw network ``F(x_in, c) -> Tensor`` shaped like ``x_in``; ``c`` is a ``[B]`` conditioning
    (EDM's c_noise for `Denoiser`, the flow time t for `FlowDenoiser`)."""

    channels: int
    resolution: int

    def __call__(self, x: Tensor, c: Tensor) -> Tensor: ...


def _model_attribute(backbone: nn.Module, name: str, given: int | None) -> int:
    value = given if given is not None else getattr(backbone, name, None)
    if value is None:
        raise ConfigError(
            f"the backbone {type(backbone).__name__} has no `{name}` attribute",
            f"pass {name}=... to the denoiser, or give the backbone a `{name}` attribute",
        )
    return int(value)


def unwrapped(model: nn.Module) -> nn.Module:
    """The denoiser itself, for reading its attributes (``channels``, ``sigma_data``), when
    ``model`` is a data-parallel wrapper around it (DistributedDataParallel keeps it as
    ``.module``); calls still go through the wrapper, which synchronizes their gradients."""
    return model if hasattr(model, "channels") else getattr(model, "module", model)


def _check_field(x: Tensor, channels: int, who: str) -> Tensor:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ShapeError(
            f"{who}: expected a field of shape [B, {channels}, H, W], got {list(x.shape)}",
            f"pass a batch [batch, {channels} channels, height, width] (add a batch axis with x[None])",
        )
    return x


def sigma_column(sigma: float | Tensor, x: Tensor, what: str = "sigma") -> Tensor:
    """Noise levels (or flow times) as a ``[B, 1, 1, 1]`` tensor in x's dtype and device.

    Accepts a float, a 0-d tensor, or one value per sample (``[B]`` or ``[B, 1, 1, 1]``); a single
    value is shared by the whole batch. ``what`` names the argument in errors.
    """
    batch = x.shape[0]
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.numel() == 1 and sigma.ndim in (0, 1, 4):
        return sigma.reshape(1, 1, 1, 1).expand(batch, 1, 1, 1)
    if sigma.shape in ((batch,), (batch, 1, 1, 1)):
        return sigma.reshape(batch, 1, 1, 1)
    raise ShapeError(
        f"{what} of shape {list(sigma.shape)} does not match a batch of {batch}",
        f"pass one {what} (a float or 0-d tensor) or one per sample, shape [{batch}]",
    )


def _call_backbone(backbone: nn.Module, x_in: Tensor, c: Tensor, guide: Tensor | None = None) -> Tensor:
    out = backbone(x_in, c) if guide is None else backbone(x_in, c, guide)
    if out.shape != x_in.shape:
        raise ShapeError(
            f"the backbone returned shape {list(out.shape)} for an input of shape {list(x_in.shape)}",
            "the backbone must return a tensor shaped like its input",
        )
    return out


SIGMA_MAX = 80.0
"""EDM's largest noise level (Karras et al. 2022): the default start of every chain. A model
trained for a wider range carries its own (`_FieldModel.sigma_max`, docs/models.md)."""


class _FieldModel(nn.Module):
    """A network on ``[B, C, H, W]`` fields around a backbone (F for EDM, v for a flow), with the
    data's ``sigma_data``; ``channels`` and ``resolution`` default to the backbone's attributes.
    ``sigma_max``: the largest noise level the model was trained for, where its chains start
    unless told otherwise (EDM: 80; a field whose largest Fourier mode has a variance near 80^2
    needs more, since the chain must start where noise swamps every mode)."""

    def __init__(
        self,
        backbone: nn.Module,
        sigma_data: float = 0.5,
        *,
        channels: int | None = None,
        resolution: int | None = None,
        sigma_max: float = SIGMA_MAX,
    ) -> None:
        super().__init__()
        if not sigma_data > 0:
            raise ConfigError(f"sigma_data must be positive, got {sigma_data}", "use 0.5 for normalized data")
        self.backbone = backbone
        self.sigma_data = float(sigma_data)
        self.sigma_max = float(sigma_max)  # the largest noise level trained, where sampling starts
        self.channels = _model_attribute(backbone, "channels", channels)
        self.resolution = _model_attribute(backbone, "resolution", resolution)


class Denoiser(_FieldModel):
    """EDM's preconditioned denoiser (Karras et al. 2022, eq. 7 and Table 1):

        D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))

        c_skip = sd^2 / (sigma^2 + sd^2)         c_out   = sigma sd / sqrt(sigma^2 + sd^2)
        c_in   = 1 / sqrt(sigma^2 + sd^2)        c_noise = ln(sigma) / 4

    with sd = ``sigma_data``. The backbone F sees unit-variance inputs and trains against a
    unit-variance target at every sigma; D -> x as sigma -> 0 whatever F does.

    ``backbone`` follows `Backbone`; ``channels`` and ``resolution`` default to its attributes.

    PG-Diffusion (Shu et al. 2023): a backbone built with a guide path (`UNetBackbone`,
    ``guide_channels``) also takes ``guide`` g ``[B, C, H, W]``, the gradient of the residual norm
    at the noisy x (in x's units, unscaled): D(x, sigma; g) = c_skip x + c_out F(c_in x, c_noise; g).
    ``guide`` None is the unguided call.
    """

    def preconditioning(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise) of EDM Table 1, elementwise in sigma."""
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        c_noise = sigma.clamp_min(torch.finfo(sigma.dtype).tiny).log() / 4  # finite at sigma = 0
        return c_skip, c_out, c_in, c_noise

    def forward(self, x: Tensor, sigma: float | Tensor, guide: Tensor | None = None) -> Tensor:
        """x0_hat = D(x, sigma) (or D(x, sigma; g) with ``guide``) for x ``[B, C, H, W]``; see the
        class docstring."""
        sigma = sigma_column(sigma, _check_field(x, self.channels, "Denoiser"))
        c_skip, c_out, c_in, c_noise = self.preconditioning(sigma)
        return c_skip * x + c_out * _call_backbone(self.backbone, c_in * x, c_noise.flatten(), guide)


def sigma_to_t(sigma: Tensor) -> Tensor:
    """Flow time of an EDM noise level: t = sigma / (1 + sigma) (maps [0, inf) onto [0, 1))."""
    return sigma / (1 + sigma)


def t_to_sigma(t: Tensor) -> Tensor:
    """EDM noise level of a flow time: sigma = t / (1 - t) (the noise-to-signal ratio of x_t)."""
    return t / (1 - t)


class FlowDenoiser(_FieldModel):
    """A rectified-flow velocity model behind the EDM call ``D(x, sigma) -> x0_hat``.

    The flow (Liu et al. 2023, rectified flow; Lipman et al. 2023, the conditional OT path)

        x_t = (1 - t) x0 + t eps,        v(x_t, t) ~ E[eps - x0 | x_t],

    is the EDM state x = x0 + sigma eps scaled by 1 - t, with sigma = t / (1 - t):

        x_t = x / (1 + sigma),   t = sigma / (1 + sigma),   x0_hat = x_t - t v(x_t, t).

    So every EDM sampler drives a flow model unchanged. The backbone v is called as
    ``velocity(x_t, t)`` with t in [0, 1) as its ``[B]`` conditioning, not scaled (as in
    facebookresearch/flow_matching's image examples). ``sigma_data`` is metadata for samplers: a
    flow has no preconditioning.
    """

    def velocity(self, x_t: Tensor, t: float | Tensor) -> Tensor:
        """v(x_t, t) for x_t ``[B, C, H, W]`` and t a float or ``[B]`` tensor of flow times."""
        t = sigma_column(t, _check_field(x_t, self.channels, "FlowDenoiser"), "t")
        return _call_backbone(self.backbone, x_t, t.flatten())

    def forward(self, x: Tensor, sigma: float | Tensor, *, as_velocity: bool = False) -> Tensor:
        """x0_hat = x_t - t v(x_t, t) at x_t = x / (1 + sigma), t = sigma / (1 + sigma).

        ``as_velocity``: x is x_t and sigma the flow time t; returns v(x_t, t) itself, so that
        training reaches the velocity through the module's call (a data-parallel wrapper only
        synchronizes gradients of calls that go through it)."""
        if as_velocity:
            return self.velocity(x, sigma)
        sigma = sigma_column(sigma, _check_field(x, self.channels, "FlowDenoiser"))
        t, x_t = sigma_to_t(sigma), x / (1 + sigma)
        return x_t - t * self.velocity(x_t, t)


@dataclass
class EDMDraw:
    """One draw of EDM's training objective: the noise levels, the denoised estimates and the
    per-element weighted squared errors (``lambda(sigma) (D(x0 + sigma n, sigma) - x0)^2``)."""

    sigma: Tensor  # [B, 1, 1, 1]
    x0_hat: Tensor  # [B, C, H, W], D(x0 + sigma n, sigma)
    weighted_squares: Tensor  # [B, C, H, W]


@dataclass(frozen=True)
class NoiseLevels:
    """The training distribution of the noise level sigma.

    EDM (Karras et al. 2022, Sec. 5): ln sigma ~ N(P_mean, P_std^2). With ``log_uniform`` = p > 0,
    a fraction p of the draws instead takes ln sigma uniform on [ln sigma_min, ln sigma_max], the
    sampler's range, so that every noise level the sampler visits is trained. Fields whose power
    sits at the lowest wavenumbers (Poisson's and Helmholtz's solutions) are decided at sigma of
    10-80, which the lognormal of EDM's images visits in under 3% of its draws (docs/models.md).
    """

    p_mean: float = -1.2
    p_std: float = 1.2
    log_uniform: float = 0.0
    sigma_min: float = 0.002
    sigma_max: float = SIGMA_MAX

    def draw(self, batch: int, generator: torch.Generator | None, dtype, device) -> Tensor:
        """``batch`` noise levels ``[batch, 1, 1, 1]``; both candidates are drawn for every sample,
        so the generator's stream does not depend on which one is kept."""
        kw = {"generator": generator, "dtype": dtype, "device": device}
        shape = (batch, 1, 1, 1)
        lognormal = self.p_mean + self.p_std * torch.randn(shape, **kw)
        if self.log_uniform <= 0:
            return lognormal.exp()
        low, high = math.log(self.sigma_min), math.log(self.sigma_max)
        uniform = low + (high - low) * torch.rand(shape, **kw)
        pick = torch.rand(shape, **kw) < self.log_uniform
        return torch.where(pick, uniform, lognormal).exp()


EDM_NOISE = NoiseLevels()


def edm_draw(
    denoiser: DenoiserLike,
    x0: Tensor,
    generator: torch.Generator | None = None,
    levels: NoiseLevels = EDM_NOISE,
    guide: Callable[[Tensor], Tensor | None] | None = None,
) -> EDMDraw:
    """EDM's training draw (Karras et al. 2022, eq. 2 and Sec. 5, Table 1 "training"):

        sigma ~ ``levels`` (EDM: ln sigma ~ N(P_mean, P_std^2)),
        lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2,

    with one sigma per sample; ``generator`` seeds both sigma and n (on x0's device). lambda
    makes the effective target of F unit-weighted at every sigma. ``guide(x)``, called on the
    noisy input x = x0 + sigma n after sigma and n are drawn, returns PG-Diffusion's guide for
    the call D(x, sigma; g), or None for the unguided call (`pirf.training.pgdiffusion`).
    """
    _check_field(x0, unwrapped(denoiser).channels, "edm_loss")
    kw = {"generator": generator, "dtype": x0.dtype, "device": x0.device}
    sigma = levels.draw(x0.shape[0], generator, x0.dtype, x0.device)
    n = torch.randn(x0.shape, **kw)
    sd = unwrapped(denoiser).sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    x = x0 + sigma * n
    g = None if guide is None else guide(x)
    x0_hat = denoiser(x, sigma.flatten()) if g is None else denoiser(x, sigma.flatten(), guide=g)
    return EDMDraw(sigma, x0_hat, weight * (x0_hat - x0) ** 2)


def edm_loss(
    denoiser: DenoiserLike,
    x0: Tensor,
    generator: torch.Generator | None = None,
    levels: NoiseLevels = EDM_NOISE,
) -> Tensor:
    """EDM's denoising loss, a scalar: the mean over batch and elements of `edm_draw`'s
    lambda(sigma) (D(x0 + sigma n, sigma) - x0)^2."""
    return edm_draw(denoiser, x0, generator, levels).weighted_squares.mean()


def sample_flow_times(
    batch: int,
    like: Tensor,
    generator: torch.Generator | None = None,
    time_sampling: TimeSampling = "uniform",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    levels: NoiseLevels | None = None,
) -> Tensor:
    """Training times t ``[B]``: U(0, 1), or logit-normal t = sigmoid(N(m, s^2)) (Esser et al. 2024,
    SD3, Sec. 3.1), which spends more samples at mid-range t.

    With ``levels.log_uniform`` = p > 0, a fraction p of the draws instead takes the flow time of a
    noise level log-uniform over [sigma_min, sigma_max], t = sigma / (1 + sigma) (`sigma_to_t`),
    the same draws EDM training takes (`NoiseLevels`): uniform t visits t > 0.95 (sigma > 19),
    where the largest scales of Poisson's u are decided, in 5% of its draws (docs/models.md).
    Both candidates are drawn for every sample, so the generator's stream does not depend on p."""
    kw = {"generator": generator, "dtype": like.dtype, "device": like.device}
    if time_sampling == "uniform":
        t = torch.rand(batch, **kw)
    elif time_sampling == "logit-normal":
        t = torch.sigmoid(logit_mean + logit_std * torch.randn(batch, **kw))
    else:
        raise ConfigError(
            f"unknown time_sampling {time_sampling!r}", "use time_sampling='uniform' or 'logit-normal'"
        )
    if levels is None or levels.log_uniform <= 0:
        return t
    low, high = math.log(levels.sigma_min), math.log(levels.sigma_max)
    wide = sigma_to_t((low + (high - low) * torch.rand(batch, **kw)).exp())
    pick = torch.rand(batch, **kw) < levels.log_uniform
    return torch.where(pick, wide, t)


def flow_matching_losses(
    model: FlowDenoiser,
    x0: Tensor,
    generator: torch.Generator | None = None,
    *,
    time_sampling: TimeSampling = "uniform",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    levels: NoiseLevels | None = None,
) -> Tensor:
    """Conditional flow-matching loss per sample ``[B]`` (Lipman et al. 2023, eq. 9; rectified flow):

        x_t = (1 - t) x0 + t eps,   loss_b = mean over elements of (v(x_t, t) - (eps - x0))^2,

    with one t per sample from `sample_flow_times` (``levels``: its log-uniform share).
    ``generator`` seeds t and eps.
    """
    _check_field(x0, unwrapped(model).channels, "flow_matching_loss")
    t = sample_flow_times(x0.shape[0], x0, generator, time_sampling, logit_mean, logit_std, levels)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    t4 = t.reshape(-1, 1, 1, 1)
    x_t = (1 - t4) * x0 + t4 * eps
    return ((model(x_t, t, as_velocity=True) - (eps - x0)) ** 2).mean(dim=(1, 2, 3))


def flow_matching_loss(
    model: FlowDenoiser,
    x0: Tensor,
    generator: torch.Generator | None = None,
    *,
    time_sampling: TimeSampling = "uniform",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    levels: NoiseLevels | None = None,
) -> Tensor:
    """The batch mean of `flow_matching_losses`, a scalar."""
    kw = {"time_sampling": time_sampling, "logit_mean": logit_mean, "logit_std": logit_std, "levels": levels}
    return flow_matching_losses(model, x0, generator, **kw).mean()


def denoising_losses(model: DenoiserLike, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The model's own training loss per sample ``[B]``: EDM's weighted denoising error (`edm_draw`)
    for an EDM denoiser, the flow-matching error (`flow_matching_losses`) for a flow model.
    Reward-weighted regression trains with it on weighted samples."""
    if isinstance(model, FlowDenoiser):
        return flow_matching_losses(model, x0, generator)
    return edm_draw(model, x0, generator).weighted_squares.mean(dim=(1, 2, 3))
