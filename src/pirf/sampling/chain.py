"""The sampling chain: the one loop every sampler runs, its types and its checks.

A sampler is a *step function* ``step(i, x, sigma, sigma_next, to_zero) -> (x_next, calls,
record)`` handed to `run_chain`, which owns what all samplers share: the checks of the noise and
the noise-level grid, x_T = sigmas[0] * noise, the gradient window (PIRF's step-wise truncation,
DRaFT-K; AlignProp's random window), the trajectory and the per-step records. The deterministic
samplers (`pirf.sampling.samplers`), the stochastic ones (`pirf.sampling.stochastic`), guidance
(`pirf.sampling.guidance`) and value-guided sampling (`pirf.sampling.value`) are step functions
on this chain. Conventions (EDM units, x = x0 + sigma * eps): `pirf.sampling.samplers`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pirf.errors import ConfigError, NonFiniteError, ShapeError
from pirf.sampling.schedules import sigma_to_t

DenoiserFn = Callable[[Tensor, Tensor], Tensor]
"""``denoiser(x [B, C, H, W], sigma [B]) -> x0_hat [B, C, H, W]`` (EDM convention)."""


@dataclass
class StepRecord:
    """One transition x_t -> x_next ~ N(mean, std^2 I) of a stochastic sampler, in EDM units.

    ``log_prob`` ``[B]`` is the Gaussian log-density of x_next averaged (not summed) over
    C * H * W (DDPO / Flow-GRPO); it is None on a deterministic step (std = 0: eta or a = 0, or
    the last step to sigma = 0), which policy-gradient methods skip. ``dt`` is in the sampler's
    own time: sigma_next - sigma (DDIM) or t_next - t (flow SDE), negative.
    """

    sampler: str  # "ddim" or "flow_sde": the transition that made it
    noise_level: float  # eta (DDIM) or a (flow SDE)
    step: int
    x_t: Tensor  # [B, C, H, W]
    x_next: Tensor  # [B, C, H, W]
    mean: Tensor  # [B, C, H, W]
    std: Tensor  # [B]
    noise: Tensor | None  # z ~ N(0, I), x_next = mean + std * z; None if deterministic
    sigma: Tensor  # [B]
    sigma_next: Tensor  # [B]
    dt: Tensor  # [B]
    log_prob: Tensor | None  # [B]

    @property
    def deterministic(self) -> bool:
        """True where the step injected no noise (no log-probability)."""
        return self.log_prob is None

    @property
    def t(self) -> Tensor:
        """Rectified-flow time of the step's start, sigma / (1 + sigma). Shape ``[B]``."""
        return sigma_to_t(self.sigma)


@dataclass
class SampleOutput:
    """What a sampler returns: the final state, its cost, and what the caller asked to keep."""

    x0: Tensor  # [B, C, H, W], the state at sigmas[-1]
    nfe: int  # network (denoiser) calls
    trajectory: list[Tensor] | None = None  # N + 1 states x_T .. x0, if return_trajectory
    records: list[StepRecord] | None = None  # one per step, stochastic samplers only


# ----------------------------------------------------------------------------------------------
# noise and the gradient window


def per_sample_noise(
    shape: Sequence[int],
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Standard normal noise of ``shape``; with a list of generators, row b comes from ``generator[b]``.

    Each row is drawn on its generator's device and moved to ``device``, so the numbers do not
    depend on the batch or on where the model runs (EDM2's per-sample seeds).
    """
    if generator is None or isinstance(generator, torch.Generator):
        g_device = device if generator is None else generator.device
        return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=g_device).to(device)
    check_generators(generator, shape[0])
    rows = [torch.randn(tuple(shape[1:]), generator=g, dtype=dtype, device=g.device) for g in generator]
    return torch.stack(rows).to(device)


def grad_window(grad_steps: int | Sequence[bool] | None, n: int) -> list[bool] | None:
    """The per-step gradient flags of ``grad_steps`` for an n-step chain (None: caller's mode)."""
    if grad_steps is None:
        return None
    if isinstance(grad_steps, bool):
        raise ConfigError(
            f"grad_steps = {grad_steps} (a bool)", "give a step count K, a list of N booleans, or None"
        )
    if isinstance(grad_steps, int):
        if not 0 <= grad_steps <= n:
            raise ConfigError(
                f"grad_steps = {grad_steps} for a {n}-step chain", f"use 0 <= grad_steps <= {n}"
            )
        return [i >= n - grad_steps for i in range(n)]
    window = [bool(flag) for flag in grad_steps]
    if len(window) != n:
        raise ConfigError(
            f"grad_steps has {len(window)} flags for a {n}-step chain", f"give exactly {n} booleans"
        )
    return window


def grad_mode(window: list[bool] | None, i: int) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if window is None else torch.set_grad_enabled(window[i])


def check_generators(generator: Sequence[torch.Generator], batch: int) -> None:
    if len(generator) != batch:
        raise ShapeError(
            f"{len(generator)} generators for a batch of {batch}", "give one torch.Generator per sample"
        )


def check_chain(noise: Tensor, sigmas: Tensor) -> None:
    if noise.ndim != 4:
        raise ShapeError(
            f"noise has shape {tuple(noise.shape)}", "give a [B, C, H, W] tensor of N(0, I) noise"
        )
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ShapeError(
            f"sigmas has shape {tuple(sigmas.shape)}",
            "give a 1-D grid of N + 1 >= 2 noise levels (karras_sigmas)",
        )
    if not torch.isfinite(sigmas).all():
        raise NonFiniteError("sigmas holds NaN or inf", "use finite noise levels (t < 1 for flow grids)")
    if not (bool((sigmas[1:] < sigmas[:-1]).all()) and sigmas[-1] >= 0):
        raise ConfigError(
            f"sigmas {sigmas.tolist()} is not strictly decreasing to a value >= 0",
            "order the grid from sigma_max down to 0 (karras_sigmas does)",
        )


# ----------------------------------------------------------------------------------------------
# the shared loop


Step = Callable[[int, Tensor, Tensor, Tensor, bool], "tuple[Tensor, int, StepRecord | None]"]


def run_chain(
    step: Step,
    noise: Tensor,
    sigmas: Tensor,
    grad_steps: int | Sequence[bool] | None,
    return_trajectory: bool,
) -> SampleOutput:
    check_chain(noise, sigmas)
    sigmas = sigmas.to(dtype=noise.dtype, device=noise.device)
    to_zero = [level == 0 for level in sigmas.tolist()]  # Python flags, read once before the loop
    n = sigmas.shape[0] - 1
    window = grad_window(grad_steps, n)
    x = sigmas[0] * noise  # x_T = sigma_max * n, n ~ N(0, I)
    trajectory, records, nfe = [x], [], 0
    for i in range(n):
        if window is not None and window[i] and i > 0 and not window[i - 1]:
            x = x.detach()  # the state entering the gradient window
        with grad_mode(window, i):
            x, calls, record = step(i, x, sigmas[i], sigmas[i + 1], to_zero[i + 1])
        nfe += calls
        trajectory.append(x)
        if record is not None:
            records.append(record)
    return SampleOutput(
        x0=x, nfe=nfe, trajectory=trajectory if return_trajectory else None, records=records or None
    )


def denoise(denoiser: DenoiserFn, x: Tensor, sigma: Tensor) -> Tensor:
    return denoiser(x, sigma.expand(x.shape[0]))


def column(value: Tensor, x: Tensor) -> Tensor:
    """A per-sample value (0-d or ``[B]``) shaped ``[B, 1, 1, 1]`` to broadcast against x."""
    return value.expand(x.shape[0]).reshape(-1, *([1] * (x.ndim - 1)))
