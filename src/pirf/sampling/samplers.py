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
denoiser's (EDM) units, for policy-gradient methods (DDPO, Black et al. 2023; Flow-GRPO, Liu et al. 2025).
The loop they all share is `pirf.sampling.chain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor

from pirf.sampling.chain import DenoiserFn, SampleOutput, denoise, run_chain

# ----------------------------------------------------------------------------------------------
# deterministic samplers (EDM Algorithm 1)


def derivative(denoiser: DenoiserFn, x: Tensor, sigma: Tensor) -> Tensor:
    return (x - denoise(denoiser, x, sigma)) / sigma  # dx/dsigma = (x - D(x, sigma)) / sigma, EDM eq. 4


def euler_step(denoiser: DenoiserFn, i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor, to_zero: bool):
    return x + (sigma_next - sigma) * derivative(denoiser, x, sigma), 1, None  # Euler step


def heun_step(denoiser: DenoiserFn, i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor, to_zero: bool):
    d = derivative(denoiser, x, sigma)
    x_next = x + (sigma_next - sigma) * d  # Euler step (EDM Alg. 1, line 5)
    if to_zero:
        return x_next, 1, None
    d_next = derivative(denoiser, x_next, sigma_next)  # 2nd-order correction (Alg. 1, lines 7-8)
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
    return run_chain(partial(euler_step, denoiser), noise, sigmas, grad_steps, return_trajectory)


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
    return run_chain(partial(heun_step, denoiser), noise, sigmas, grad_steps, return_trajectory)
