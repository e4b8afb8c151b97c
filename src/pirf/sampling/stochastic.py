"""Stochastic samplers with one `StepRecord` per step, for policy-gradient methods.

DDIM in EDM (variance-exploding) units and the Flow-GRPO SDE, both as Gaussian transitions
N(mean, std^2 I) whose log-densities (averaged over dimensions, as DDPO and Flow-GRPO do) can be
recomputed under another model from the record alone. Shared conventions: `pirf.sampling.samplers`;
the loop: `pirf.sampling.chain`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from pirf.errors import ConfigError
from pirf.sampling.chain import (
    DenoiserFn,
    SampleOutput,
    StepRecord,
    check_chain,
    check_generators,
    column,
    denoise,
    per_sample_noise,
    run_chain,
)
from pirf.sampling.schedules import sigma_to_t


@dataclass
class Transition:
    """A Gaussian transition N(mean, std^2 I) from x at sigma to sigma_next (EDM units)."""

    mean: Tensor  # [B, C, H, W]
    std: Tensor  # [B]
    x0_hat: Tensor  # [B, C, H, W]
    dt: Tensor  # [B]


# ----------------------------------------------------------------------------------------------
# stochastic samplers with per-step records


def ddim_transition(
    denoiser: DenoiserFn, x: Tensor, sigma: Tensor, sigma_next: Tensor, eta: float
) -> Transition:
    """DDIM (Song et al. 2021) written for the EDM (variance-exploding) state x = x0 + sigma eps.

        x0_hat = D(x, s),  eps_hat = (x - x0_hat) / s,
        std^2  = eta^2 s'^2 (s^2 - s'^2) / s^2,
        mean   = x0_hat + sqrt(s'^2 - std^2) eps_hat,      x' = mean + std z.

    Derivation: the VP state is x_vp = x / sqrt(1 + s^2) (alpha_bar = 1 / (1 + s^2)). Dividing
    DDIM's update by sqrt(alpha_bar') turns its sqrt(1 - alpha_bar' - sigma_t^2) into
    sqrt(s'^2 - std^2) with std = sigma_t / sqrt(alpha_bar'), and DDIM's
    sigma_t^2 = eta^2 (1 - a') / (1 - a) (1 - a / a') becomes the std^2 above. eta = 0 is the
    deterministic DDIM step, identical to Euler in sigma; eta = 1 is the ancestral (DDPM
    posterior) step, mean = x0_hat + (s'^2 / s) eps_hat. sigma, sigma_next: 0-d or ``[B]``.
    """
    s, s_next = column(sigma, x), column(sigma_next, x)
    x0_hat = denoise(denoiser, x, sigma)
    eps_hat = (x - x0_hat) / s
    std = eta * torch.sqrt(s_next**2 * (s**2 - s_next**2) / s**2)
    mean = x0_hat + torch.sqrt((s_next**2 - std**2).clamp_min(0)) * eps_hat
    return Transition(mean=mean, std=std.reshape(-1), x0_hat=x0_hat, dt=(s_next - s).reshape(-1))


def flow_sde_transition(
    denoiser: DenoiserFn, x: Tensor, sigma: Tensor, sigma_next: Tensor, noise_level: float
) -> Transition:
    """One Euler-Maruyama step of the Flow-GRPO SDE (Liu et al. 2025), returned in EDM units.

    In rectified-flow units x_t = (1 - t) x0 + t eps = x / (1 + s), t = s / (1 + s):

        v      = eps_hat - x0_hat = (x_t - x0_hat) / t,      (eps_hat = (x_t - (1 - t) x0_hat) / t)
        std_t  = a sqrt(t / (1 - t))   (= a sqrt(s)),         dt = t' - t < 0,
        mean_t = x_t (1 + std_t^2 dt / (2t)) + v (1 + std_t^2 (1 - t) / (2t)) dt,
        x_t'   = mean_t + std_t sqrt(-dt) z.

    This is the reverse SDE with the flow ODE's marginals (drift v - std_t^2 / 2 * score, with
    score = -(x_t + (1 - t) v) / t). The Gaussian is mapped back to EDM units by x' = (1 + s') x_t',
    so mean = (1 + s') mean_t and std = (1 + s') std_t sqrt(-dt): PPO ratios and the KL term
    (mean - mean_ref)^2 / std^2 are the same in either unit; a log-probability differs from
    Flow-GRPO's by the constant -log(1 + s'). The step to s' = 0 is taken without noise
    (the plain ODE step, which lands on x0_hat) and is marked deterministic. a -> 0 gives the
    flow-ODE Euler step.
    """
    s, s_next = column(sigma, x), column(sigma_next, x)
    x0_hat = denoise(denoiser, x, sigma)
    t, t_next = sigma_to_t(s), sigma_to_t(s_next)
    dt = t_next - t
    x_t = x / (1 + s)
    v = (x_t - x0_hat) / t
    std_t = noise_level * torch.sqrt(t / (1 - t)) * (s_next > 0)  # no noise on the step to t = 0
    mean_t = x_t * (1 + std_t**2 * dt / (2 * t)) + v * (1 + std_t**2 * (1 - t) / (2 * t)) * dt
    scale = 1 + s_next  # back to EDM units
    std = scale * std_t * torch.sqrt(-dt)
    return Transition(mean=scale * mean_t, std=std.reshape(-1), x0_hat=x0_hat, dt=dt.reshape(-1))


TRANSITIONS: dict[str, Callable[..., Transition]] = {"ddim": ddim_transition, "flow_sde": flow_sde_transition}


def step_log_prob(mean: Tensor, std: Tensor | float, x_next: Tensor) -> Tensor:
    """log N(x_next; mean, std^2 I) averaged over all dimensions but the batch. Shape ``[B]``.

    ``std``: a number, 0-d, or ``[B]``; it must be positive (deterministic steps have none).
    """
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    if std.ndim == 1:
        std = column(std, mean)
    log_density = -((x_next - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return log_density.mean(dim=tuple(range(1, mean.ndim)))


def _stochastic_step(
    name: str,
    noise_level: float,
    generator: torch.Generator | Sequence[torch.Generator] | None,
    denoiser: DenoiserFn,
    i: int,
    x: Tensor,
    sigma: Tensor,
    sigma_next: Tensor,
    to_zero: bool,
):
    tr = TRANSITIONS[name](denoiser, x, sigma, sigma_next, noise_level)
    if noise_level == 0 or to_zero:
        x_next, z, log_prob = tr.mean, None, None  # deterministic step: no noise, no log-probability
    else:
        z = per_sample_noise(x.shape, generator, dtype=x.dtype, device=x.device)
        x_next = tr.mean + column(tr.std, x) * z
        log_prob = step_log_prob(tr.mean, tr.std, x_next)
    batch = x.shape[0]
    record = StepRecord(
        name,
        noise_level,
        i,
        x,
        x_next,
        tr.mean,
        tr.std,
        z,
        sigma.expand(batch),
        sigma_next.expand(batch),
        tr.dt,
        log_prob,
    )
    return x_next, 1, record


def _sample_stochastic(
    name: str,
    noise_level: float,
    denoiser: DenoiserFn,
    noise: Tensor,
    sigmas: Tensor,
    grad_steps: int | Sequence[bool] | None,
    generator: torch.Generator | Sequence[torch.Generator] | None,
    return_trajectory: bool,
) -> SampleOutput:
    if generator is not None and not isinstance(generator, torch.Generator) and noise.ndim > 0:
        check_generators(generator, noise.shape[0])
    step = partial(_stochastic_step, name, noise_level, generator, denoiser)
    return run_chain(step, noise, sigmas, grad_steps, return_trajectory)


def sample_ddim(
    denoiser: DenoiserFn,
    noise: Tensor,
    sigmas: Tensor,
    *,
    eta: float = 1.0,
    grad_steps: int | Sequence[bool] | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    return_trajectory: bool = False,
) -> SampleOutput:
    """DDIM in EDM units (`ddim_transition`), with one `StepRecord` per step (DDPO's sampler).

    ``eta`` in [0, 1]: 0 is deterministic (= `sample_euler`), 1 is ancestral; DDPO uses 1.
    N network calls for N steps.
    """
    if not 0 <= eta <= 1:
        raise ConfigError(f"sample_ddim: eta = {eta}", "use 0 <= eta <= 1 (DDPO: 1.0; 0 is deterministic)")
    return _sample_stochastic("ddim", eta, denoiser, noise, sigmas, grad_steps, generator, return_trajectory)


def sample_flow_sde(
    denoiser: DenoiserFn,
    noise: Tensor,
    sigmas: Tensor,
    *,
    noise_level: float = 0.7,
    grad_steps: int | Sequence[bool] | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    return_trajectory: bool = False,
) -> SampleOutput:
    """The Flow-GRPO SDE (`flow_sde_transition`, ``noise_level`` = a, about 0.7), one `StepRecord`
    per step, states in EDM units. Use a t grid (`flow_sigmas`); a = 0 is `sample_euler`.

    The mean's factor on x_t, 1 + std_t^2 dt / (2t) = 1 - a^2 (1 + sigma) |dt| / 2, must stay
    positive: on a uniform grid of n steps that is 1 - t_max > a^2 / (2n) (a = 0.7, t_max = 80/81
    needs n > 20). A grid that breaks it is refused rather than sampled.
    """
    if noise_level < 0:
        raise ConfigError(
            f"sample_flow_sde: noise_level = {noise_level}", "use noise_level >= 0 (Flow-GRPO: 0.7)"
        )
    check_chain(noise, sigmas)
    _check_flow_sde_steps(sigmas, noise_level)
    return _sample_stochastic(
        "flow_sde", noise_level, denoiser, noise, sigmas, grad_steps, generator, return_trajectory
    )


def _check_flow_sde_steps(sigmas: Tensor, noise_level: float) -> None:
    levels = sigmas.tolist()
    for i, (s, s_next) in enumerate(itertools.pairwise(levels)):
        shrink = noise_level**2 * (1 + s) * (s / (1 + s) - s_next / (1 + s_next)) / 2
        if s_next > 0 and shrink >= 1:
            raise ConfigError(
                f"sample_flow_sde: step {i} (sigma {s:.4g} -> {s_next:.4g}) is unstable: the mean's factor "
                f"on x_t is 1 - {shrink:.3g} <= 0",
                "use more steps, a smaller noise_level, or a lower t_max (flow_sigmas)",
            )


# ----------------------------------------------------------------------------------------------
# recomputing recorded transitions under another model


def recompute_transition(denoiser: DenoiserFn, record: StepRecord) -> Transition:
    """The recorded step's Gaussian under ``denoiser`` (the grad mode is the caller's).

    ``mean`` gives the KL-to-reference term (mean - mean_ref)^2 / (2 std^2) of Flow-GRPO.
    """
    return TRANSITIONS[record.sampler](
        denoiser, record.x_t, record.sigma, record.sigma_next, record.noise_level
    )


def recompute_log_prob(denoiser: DenoiserFn, record: StepRecord) -> Tensor:
    """log pi(x_next | x_t) of a recorded step under ``denoiser``, averaged over dims. Shape ``[B]``.

    With the denoiser that sampled the step this reproduces ``record.log_prob``; the PPO ratio
    is exp(recompute_log_prob(new, record) - record.log_prob).
    """
    if record.deterministic:
        raise ConfigError(
            f"step {record.step} of a {record.sampler} chain is deterministic and has no log-probability",
            "skip records with record.deterministic (the last step, or eta / noise_level = 0)",
        )
    tr = recompute_transition(denoiser, record)
    return step_log_prob(tr.mean, tr.std, record.x_next)
