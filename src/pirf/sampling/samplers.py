"""Samplers: small functions with one shared signature, a gradient window, per-step records.

Every sampler is ``sample_*(denoiser, noise, sigmas, *, grad_steps=None, generator=None,
return_trajectory=False, ...) -> SampleOutput``:

- ``denoiser(x, sigma) -> x0_hat``, x ``[B, C, H, W]``, sigma ``[B]``, in the EDM convention
  x = x0 + sigma * eps (Karras et al. 2022). A flow-matching model is wrapped to this call with
  sigma = t / (1 - t); the samplers never see the difference.
- ``noise`` ``[B, C, H, W]`` ~ N(0, I) (unit variance); the chain starts at x_T = sigmas[0] * noise.
- ``sigmas`` ``[N + 1]`` strictly decreasing, ``sigmas[N] >= 0`` (`pirf.sampling.schedules`).
- ``grad_steps`` is the gradient window (PIRF / DRaFT-K truncated backprop): K means only the
  last K steps build an autograd graph, a sequence of N booleans picks the steps (AlignProp's
  random truncation point), None leaves the caller's grad mode alone for every step.
  Steps outside the window run under `torch.no_grad()`, steps inside under
  `torch.enable_grad()`; a state entering the window after a no-grad step is detached (with the
  window starting at step 0 the gradient reaches ``noise``). Heun's corrector is inside its
  step's window. Numbers do not depend on the window.
- ``generator``: None (global RNG), one `torch.Generator`, or one per sample (EDM2's habit):
  with a list, sample b's injected noise depends only on ``generator[b]``, so a rollout is
  reproducible whatever the batch it ran in. Deterministic samplers accept and ignore it.

Euler in sigma is also the rectified-flow Euler step in t: with x_t = x / (1 + sigma),
t = sigma / (1 + sigma) and v = (x_t - x0_hat) / t,
    x_t + (t' - t) v = (x_t t' + x0_hat (t - t')) / t
                     = [x + (sigma' - sigma)(x - x0_hat) / sigma] / (1 + sigma'),
so `sample_euler` on `flow_sigmas` *is* the flow-matching Euler sampler (uniform t grid).

Stochastic samplers (`sample_ddim`, `sample_flow_sde`) return one `StepRecord` per step, in the
denoiser's (EDM) units, for policy-gradient methods (REFERENCE sec. 4).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pirf.errors import ConfigError, NonFiniteError, ShapeError

if TYPE_CHECKING:
    from pirf.sampling.stochastic import StepRecord

DenoiserFn = Callable[[Tensor, Tensor], Tensor]
"""``denoiser(x [B, C, H, W], sigma [B]) -> x0_hat [B, C, H, W]`` (EDM convention)."""


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
    _check_generators(generator, shape[0])
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


def _grad_mode(window: list[bool] | None, i: int) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if window is None else torch.set_grad_enabled(window[i])


def _check_generators(generator: Sequence[torch.Generator], batch: int) -> None:
    if len(generator) != batch:
        raise ShapeError(
            f"{len(generator)} generators for a batch of {batch}", "give one torch.Generator per sample"
        )


def _check_chain(noise: Tensor, sigmas: Tensor) -> None:
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


def _run_chain(
    step: Step,
    noise: Tensor,
    sigmas: Tensor,
    grad_steps: int | Sequence[bool] | None,
    return_trajectory: bool,
) -> SampleOutput:
    _check_chain(noise, sigmas)
    sigmas = sigmas.to(dtype=noise.dtype, device=noise.device)
    to_zero = [level == 0 for level in sigmas.tolist()]  # Python flags, read once before the loop
    n = sigmas.shape[0] - 1
    window = grad_window(grad_steps, n)
    x = sigmas[0] * noise  # x_T = sigma_max * n, n ~ N(0, I)
    trajectory, records, nfe = [x], [], 0
    for i in range(n):
        if window is not None and window[i] and i > 0 and not window[i - 1]:
            x = x.detach()  # the state entering the gradient window
        with _grad_mode(window, i):
            x, calls, record = step(i, x, sigmas[i], sigmas[i + 1], to_zero[i + 1])
        nfe += calls
        trajectory.append(x)
        if record is not None:
            records.append(record)
    return SampleOutput(
        x0=x, nfe=nfe, trajectory=trajectory if return_trajectory else None, records=records or None
    )


def _denoise(denoiser: DenoiserFn, x: Tensor, sigma: Tensor) -> Tensor:
    return denoiser(x, sigma.expand(x.shape[0]))


def _column(value: Tensor, x: Tensor) -> Tensor:
    """A per-sample value (0-d or ``[B]``) shaped ``[B, 1, 1, 1]`` to broadcast against x."""
    return value.expand(x.shape[0]).reshape(-1, *([1] * (x.ndim - 1)))


# ----------------------------------------------------------------------------------------------
# deterministic samplers (EDM Algorithm 1)


def _derivative(denoiser: DenoiserFn, x: Tensor, sigma: Tensor) -> Tensor:
    return (x - _denoise(denoiser, x, sigma)) / sigma  # dx/dsigma = (x - D(x, sigma)) / sigma, EDM eq. 4


def _euler_step(denoiser: DenoiserFn, i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor, to_zero: bool):
    return x + (sigma_next - sigma) * _derivative(denoiser, x, sigma), 1, None  # Euler step


def _heun_step(denoiser: DenoiserFn, i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor, to_zero: bool):
    d = _derivative(denoiser, x, sigma)
    x_next = x + (sigma_next - sigma) * d  # Euler step (EDM Alg. 1, line 5)
    if to_zero:
        return x_next, 1, None
    d_next = _derivative(denoiser, x_next, sigma_next)  # 2nd-order correction (Alg. 1, lines 7-8)
    return x + (sigma_next - sigma) * (d + d_next) / 2, 2, None


def sample_euler(
    denoiser: DenoiserFn,
    noise: Tensor,
    sigmas: Tensor,
    *,
    grad_steps: int | Sequence[bool] | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    return_trajectory: bool = False,
) -> SampleOutput:
    """Euler on the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma (EDM eq. 4).

    First order; N network calls for N steps. Deterministic (``generator`` is ignored).
    """
    return _run_chain(partial(_euler_step, denoiser), noise, sigmas, grad_steps, return_trajectory)


def sample_heun(
    denoiser: DenoiserFn,
    noise: Tensor,
    sigmas: Tensor,
    *,
    grad_steps: int | Sequence[bool] | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    return_trajectory: bool = False,
) -> SampleOutput:
    """EDM Algorithm 1 (deterministic Heun): Euler step plus a 2nd-order correction, skipped on
    the step to sigma = 0. Second order; 2N - 1 network calls for N steps ending at 0 (PIRF's
    sampler). ``generator`` is ignored.
    """
    return _run_chain(partial(_heun_step, denoiser), noise, sigmas, grad_steps, return_trajectory)
