"""Inference-time guidance: DPS-style residual guidance (DiffusionPDE) and CoCoGen's corrections.

Both need the gradient of a per-sample loss ``loss(x [B, C, H, W]) -> [B]`` taken in the
sampler's (model) space; for physics guidance it is the L2 norm of the PDE residual of the fields
x stand for, ||R(x)||_2 (`pirf.rewards.ResidualReward.residual_norm`).

- **DPS guidance** (Chung et al. 2023, as DiffusionPDE, Huang et al. 2024, applies it to PDE
  fields): a deterministic Heun chain in which each of the last ``fraction`` of the steps is
  followed by

      x_{i+1} <- x_{i+1} - zeta * grad_{x_i} ||R(D(x_i, sigma_i))||_2,

  the gradient taken through one network call at the state the step started from (REFERENCE
  sec. 3). It needs a backward pass through the network at test time.
- **CoCoGen** (Jacobsen et al. 2024): the same chain, then ``steps`` gradient steps on the
  final sample itself, x <- x - zeta_c * grad_x ||R(x)||_2 (no network call).
- **PG-Diffusion** (Shu, Li & Barati Farimani 2023, as PIRF's baselines run it, Yuan et al.
  2025): a network trained to read a physics guide (`pirf.training.pgdiffusion`) is sampled
  with Euler steps; step i calls D(x_i, sigma_i) unguided while i < 0.3 N (the first
  ceil(0.3 N) steps) and D(x_i, sigma_i; g_i), g_i = grad_{x_i} ||R(x_i)||_2, after. N network
  calls and N - ceil(0.3 N) residual gradients (no backward through the network).

The guidance gradients are taken under `torch.enable_grad` whatever the caller's mode (guidance
is a test-time computation, usually run under `torch.no_grad`); the returned states are detached.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from pirf.errors import ConfigError, NonFiniteError, ShapeError
from pirf.sampling.chain import DenoiserFn, SampleOutput, denoise, run_chain
from pirf.sampling.samplers import heun_step

GuidanceLoss = Callable[[Tensor], Tensor]
"""``loss(x [B, C, H, W]) -> [B]``, in the sampler's space; guidance descends its gradient."""


@dataclass(frozen=True)
class Guidance:
    """DPS guidance settings: step size ``zeta`` on the last ``fraction`` of the chain's steps."""

    loss: GuidanceLoss
    zeta: float
    fraction: float = 0.2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.zeta) and self.zeta >= 0):
            raise ConfigError(f"guidance zeta = {self.zeta}", "use a finite step size >= 0")
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"guidance fraction = {self.fraction}", "use a fraction of the steps in [0, 1]")

    def guided(self, n: int) -> list[bool]:
        """Which of n steps are guided: the last round(fraction * n) (DiffusionPDE: the last 20%)."""
        first = n - round(self.fraction * n)
        return [i >= first for i in range(n)]


def loss_gradient(
    loss: GuidanceLoss, x: Tensor, through: DenoiserFn | None = None, sigma: Tensor | None = None
) -> Tensor:
    """grad_x sum_b loss(x_b) (``through`` = None) or grad_x sum_b loss(D(x_b, sigma)); per
    sample, since sample b's loss depends on x_b only. Raises on a non-finite gradient."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        target = x_in if through is None else denoise(through, x_in, sigma)
        values = loss(target)
        if values.shape != (x.shape[0],):
            raise ShapeError(
                f"the guidance loss returned shape {tuple(values.shape)} for a batch of {x.shape[0]}",
                "return one number per sample",
            )
        (grad,) = torch.autograd.grad(values.sum(), x_in)
    if not torch.isfinite(grad).all():
        raise NonFiniteError(
            "the guidance gradient holds NaN or inf", "lower zeta, or check the loss on these samples"
        )
    return grad


def _guided_heun_step(
    denoiser: DenoiserFn,
    guidance: Guidance,
    guided: list[bool],
    i: int,
    x: Tensor,
    sigma: Tensor,
    sigma_next: Tensor,
    to_zero: bool,
):
    x_next, calls, _ = heun_step(denoiser, i, x, sigma, sigma_next, to_zero)
    if not guided[i] or guidance.zeta == 0:
        return x_next, calls, None
    grad = loss_gradient(guidance.loss, x, denoiser, sigma)  # grad_{x_i} ||R(D(x_i))||, DiffusionPDE
    return x_next.detach() - guidance.zeta * grad, calls + 1, None


def sample_heun_dps(
    denoiser: DenoiserFn,
    noise: Tensor,
    sigmas: Tensor,
    guidance: Guidance,
    *,
    return_trajectory: bool = False,
) -> SampleOutput:
    """EDM's deterministic Heun chain (`sample_heun`) with DPS guidance after each of the last
    ``guidance.fraction`` of the steps (module docstring). ``nfe`` counts the extra network call
    (forward and backward) of each guided step."""
    n = sigmas.shape[0] - 1
    guided = guidance.guided(n)

    def step(i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor, to_zero: bool):
        return _guided_heun_step(denoiser, guidance, guided, i, x, sigma, sigma_next, to_zero)

    return run_chain(step, noise, sigmas, None, return_trajectory)


PG_UNGUIDED = 0.3
"""PG-Diffusion's unguided share of the steps: step i < 0.3 N calls the network unguided."""


def pg_unguided_steps(n: int, fraction: float = PG_UNGUIDED) -> int:
    """How many of n steps run unguided: the i in 0 .. n - 1 with i < fraction * n, ceil(fraction n)
    (rounded to 9 decimals first, so 0.3 * 10 is 3, not 4 by round-off)."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"PG-Diffusion unguided fraction = {fraction}", "use a fraction in [0, 1]")
    return math.ceil(round(fraction * n, 9))


def _pg_euler_step(
    denoiser: Callable[..., Tensor],
    loss: GuidanceLoss,
    unguided: int,
    i: int,
    x: Tensor,
    sigma: Tensor,
    sigma_next: Tensor,
    to_zero: bool,
):
    sigmas = sigma.expand(x.shape[0])
    guide = {} if i < unguided else {"guide": loss_gradient(loss, x)}  # g_i = grad_{x_i} ||R(x_i)||_2
    d = (x - denoiser(x, sigmas, **guide)) / sigma  # dx/dsigma = (x - D(x, sigma; g)) / sigma, EDM eq. 4
    return x + (sigma_next - sigma) * d, 1, None  # Euler step


def sample_euler_pg(
    denoiser: Callable[..., Tensor],
    noise: Tensor,
    sigmas: Tensor,
    loss: GuidanceLoss,
    *,
    unguided_fraction: float = PG_UNGUIDED,
    return_trajectory: bool = False,
) -> SampleOutput:
    """PG-Diffusion's sampler (module docstring): Euler on ``sigmas``, the first
    `pg_unguided_steps` steps unguided, the others with the guide g = grad_x sum_b loss(x_b) at
    the step's state. ``denoiser(x, sigma, guide=g)`` is a PG-Diffusion model (`Denoiser` around
    a U-Net with a guide path); ``nfe`` is N (the residual gradients are not network calls)."""
    unguided = pg_unguided_steps(sigmas.shape[0] - 1, unguided_fraction)
    step = partial(_pg_euler_step, denoiser, loss, unguided)
    return run_chain(step, noise, sigmas, None, return_trajectory)


def cocogen_correct(x: Tensor, loss: GuidanceLoss, zeta: float, steps: int) -> Tensor:
    """CoCoGen's corrections of a final sample: ``steps`` times x <- x - zeta grad_x loss(x)."""
    if steps < 0 or not (math.isfinite(zeta) and zeta >= 0):
        raise ConfigError(f"CoCoGen corrections: steps = {steps}, zeta = {zeta}", "use steps >= 0, zeta >= 0")
    x = x.detach()
    for _ in range(steps):
        x = x - zeta * loss_gradient(loss, x)
    return x


__all__ = [
    "PG_UNGUIDED",
    "Guidance",
    "GuidanceLoss",
    "cocogen_correct",
    "loss_gradient",
    "pg_unguided_steps",
    "sample_euler_pg",
    "sample_heun_dps",
]
