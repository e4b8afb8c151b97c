"""Value-guided sampling: the KL-regularized optimal policy, approximated at inference time.

Reward fine-tuning with a KL penalty, max_p E_p[r(x0)] - alpha KL(p || p_pre), has the closed
form p*(x0) ∝ p_pre(x0) exp(r(x0) / alpha), and it is generated step by step by the soft-optimal
policy (Uehara et al. 2024, "Understanding reinforcement learning-based fine-tuning of diffusion
models: a tutorial and review", sec. 6, "value-weighted sampling"):

    p*(x' | x_t) ∝ p_pre(x' | x_t) exp(v(x') / alpha),
    v(x_t) = alpha log E_{p_pre}[exp(r(x0) / alpha) | x_t]            (the soft value),

with the value approximated by the reward of the denoised estimate, v(x_t) ≈ r(D(x_t, sigma_t))
(as DPS, Chung et al. 2023). Here the base step p_pre(x' | x_t) = N(mean, std^2 I) is DDIM in
EDM units with eta > 0 (`pirf.sampling.stochastic.ddim_transition`); the step to sigma = 0 is
deterministic and unguided. ``alpha`` is in the reward's units (for PIRF's residual reward,
r = -mean squared PDE residual in physical units): smaller alpha guides harder, alpha = inf is
plain DDIM.

- **gradient** (classifier-guidance form): with v linearized, N(mean, std^2) exp(v / alpha) is
  N(mean + std^2 grad v / alpha, std^2), so each stochastic step is

      x' = mean + std^2 * grad_{x_t} v(D(x_t, sigma)) / alpha + std * z,

  the gradient taken through the same network call that made the step (one backward per step).
- **best-of** (derivative-free; SVDD, Li et al. 2024, "Derivative-free guidance in continuous and
  discrete diffusion models with soft value-based decoding"): draw M proposals
  x'^m = mean + std z^m from the base step, score each by v(D(x'^m, sigma')), and keep per
  sample the one with the highest value. This is SVDD's alpha -> 0 limit (importance weights
  exp(v / alpha) become an argmax), so the value of a finite alpha does not enter; alpha = inf
  switches it off. It needs no gradient: it takes black-box rewards.

Cost (``SampleOutput.nfe`` counts forward network calls, as the other samplers do): gradient
mode makes N calls for N steps, plus one backward pass through the network on each stochastic
step (DPS, `pirf.sampling.guidance`, counts its extra forward-and-backward as a call; here the
forward is shared with the step). Best-of makes 1 + M * S calls for S stochastic steps: the
chosen proposal's denoised estimate is the next step's network call, so M = 1 costs exactly
what `sample_ddim` costs and draws the same samples.

Noise follows `sample_ddim`: with one generator per sample, sample b's step noise and its M
proposals come from ``generator[b]`` only (proposal 0 is the noise plain DDIM would draw).
Guidance is a test-time computation: it runs under `torch.no_grad` or not, the gradients are
taken under `torch.enable_grad`, and the returned states carry no graph.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pirf.errors import ConfigError, NonFiniteError, ShapeError
from pirf.sampling.chain import (
    DenoiserFn,
    SampleOutput,
    check_chain,
    check_generators,
    column,
    denoise,
    per_sample_noise,
    run_chain,
)
from pirf.sampling.stochastic import ddim_transition

if TYPE_CHECKING:
    from pirf.normalization import Normalization
    from pirf.rewards import Reward

ValueFn = Callable[[Tensor], Tensor]
"""``value(x0_hat [B, C, H, W]) -> [B]``: the reward of a denoised estimate in the model's
normalized space (higher is better). An optional ``differentiable`` attribute (False for
black-box rewards) is read by the gradient mode."""

VALUE_MODES = ("gradient", "best-of")
Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass(frozen=True)
class RewardValue:
    """The value of a reward on model-space estimates: value(x) = reward(denormalize(x)).

    Carries the reward's ``differentiable`` flag, so that the gradient mode refuses a
    black-box reward up front.
    """

    reward: Reward
    normalization: Normalization | None = None

    @property
    def differentiable(self) -> bool:
        return bool(getattr(self.reward, "differentiable", True))

    def __call__(self, x: Tensor) -> Tensor:
        return self.reward(x if self.normalization is None else self.normalization.denormalize(x))


# ----------------------------------------------------------------------------------------------
# checks


def check_value_settings(
    alpha: float, mode: str, candidates: int, eta: float, value: ValueFn | None = None
) -> None:
    """Raise a `ConfigError` for settings `sample_value_guided` refuses (before any sampling):
    an unknown mode, alpha <= 0 or NaN, candidates < 1, eta outside (0, 1], or mode "gradient"
    with a ``value`` whose ``differentiable`` is False."""
    if mode not in VALUE_MODES:
        close = difflib.get_close_matches(str(mode), VALUE_MODES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"unknown value-guidance mode {mode!r}", f"{hint}use one of: {', '.join(VALUE_MODES)}"
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ConfigError(
            f"value guidance: alpha = {alpha!r}",
            "use alpha > 0, in the reward's units (smaller guides harder; inf is plain DDIM)",
        )
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ConfigError(
            f"value guidance: candidates = {candidates!r}", "use an integer M >= 1 (proposals per step)"
        )
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 < eta <= 1:
        raise ConfigError(
            f"value guidance: eta = {eta!r}",
            "use 0 < eta <= 1 (1 is ancestral DDIM); eta = 0 leaves no noise to guide -- "
            "guide the deterministic chain with DPS (pirf.sampling.guidance) instead",
        )
    if mode == "gradient" and value is not None and not getattr(value, "differentiable", True):
        raise ConfigError(
            "value guidance in mode 'gradient' needs the reward's gradient, and this reward has none "
            "(a black-box reward)",
            "use mode 'best-of' (derivative-free: M proposals per step, the best one kept)",
        )


def _check_finite(x: Tensor, what: str, i: int, sigma: Tensor) -> None:
    if not torch.isfinite(x).all():
        raise NonFiniteError(
            f"value guidance: {what} of step {i} (sigma {float(sigma):.4g}) holds NaN or inf",
            "guide more gently: raise alpha (or use more steps)",
        )


def _value_gradient(value: ValueFn, x0_hat: Tensor, x_in: Tensor) -> Tensor:
    """grad_{x_t} sum_b value(x0_hat_b), x0_hat = D(x_t) built from ``x_in`` with a graph."""
    values = value(x0_hat)
    if values.shape != (x_in.shape[0],):
        raise ShapeError(
            f"the value returned shape {tuple(values.shape)} for a batch of {x_in.shape[0]}",
            "return one number per sample",
        )
    if not values.requires_grad:
        raise ConfigError(
            "value guidance in mode 'gradient': the value carries no gradient (computed outside autograd?)",
            "use mode 'best-of' for a reward without gradients",
        )
    (grad,) = torch.autograd.grad(values.sum(), x_in)
    if not torch.isfinite(grad).all():
        raise NonFiniteError(
            "the value gradient holds NaN or inf", "raise alpha, or check the reward on these samples"
        )
    return grad


def _best_values(value: ValueFn, x0_hats: Tensor) -> Tensor:
    """value of ``[B, M, C, H, W]`` estimates, ``[B, M]``; NaN scores as -inf (never chosen)."""
    batch, m = x0_hats.shape[:2]
    values = value(x0_hats.flatten(0, 1))
    if values.shape != (batch * m,):
        raise ShapeError(
            f"the value returned shape {tuple(values.shape)} for a batch of {batch * m}",
            "return one number per sample",
        )
    return torch.nan_to_num(values.reshape(batch, m), nan=-math.inf)


# ----------------------------------------------------------------------------------------------
# steps


def _plain_step(
    denoiser: DenoiserFn,
    eta: float,
    generator: Generators,
    x: Tensor,
    sigma: Tensor,
    sigma_next: Tensor,
    to_zero: bool,
) -> Tensor:
    """One `sample_ddim` step (the same noise draw, the same arithmetic)."""
    tr = ddim_transition(denoiser, x, sigma, sigma_next, eta)
    if to_zero:
        return tr.mean
    z = per_sample_noise(x.shape, generator, dtype=x.dtype, device=x.device)
    return tr.mean + column(tr.std, x) * z


def _gradient_step(
    denoiser: DenoiserFn,
    value: ValueFn,
    alpha: float,
    eta: float,
    generator: Generators,
    i: int,
    x: Tensor,
    sigma: Tensor,
    sigma_next: Tensor,
    to_zero: bool,
):
    if to_zero or math.isinf(alpha):
        return _plain_step(denoiser, eta, generator, x, sigma, sigma_next, to_zero), 1, None
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        tr = ddim_transition(denoiser, x_in, sigma, sigma_next, eta)
        _check_finite(tr.x0_hat, "the denoised estimate", i, sigma)
        grad = _value_gradient(value, tr.x0_hat, x_in)
    std = column(tr.std.detach(), x)
    mean = tr.mean.detach() + std**2 * grad / alpha  # N(mean, std^2) exp(v / alpha), v linearized
    _check_finite(mean, "the guided mean", i, sigma)
    z = per_sample_noise(x.shape, generator, dtype=x.dtype, device=x.device)
    return mean + std * z, 1, None


class _BestOfStep:
    """SVDD-style best-of-M steps; keeps the chosen proposal's D(x', sigma') for the next step."""

    def __init__(
        self, denoiser: DenoiserFn, value: ValueFn, candidates: int, eta: float, generator: Generators
    ):
        self.denoiser, self.value, self.candidates = denoiser, value, candidates
        self.eta, self.generator = eta, generator
        self.cached: tuple[Tensor, Tensor] | None = None  # (state, its denoised estimate)

    def __call__(self, i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor, to_zero: bool):
        calls, denoiser = 1, self.denoiser
        if self.cached is not None and self.cached[0] is x:
            x0_hat = self.cached[1]
            calls, denoiser = 0, lambda _x, _sigma: x0_hat  # D(x, sigma) was computed as a proposal's
        self.cached = None
        tr = ddim_transition(denoiser, x, sigma, sigma_next, self.eta)
        if to_zero:
            return tr.mean, calls, None
        batch, m = x.shape[0], self.candidates
        z = per_sample_noise((batch, m, *x.shape[1:]), self.generator, dtype=x.dtype, device=x.device)
        proposals = tr.mean.unsqueeze(1) + column(tr.std, x).unsqueeze(1) * z  # [B, M, C, H, W]
        with torch.no_grad():
            x0_hats = torch.stack(
                [denoise(self.denoiser, proposals[:, k].contiguous(), sigma_next) for k in range(m)], dim=1
            )
            best = _best_values(self.value, x0_hats).argmax(dim=1)  # per sample, the highest value
        rows = torch.arange(batch, device=x.device)
        x_next = proposals[rows, best]
        self.cached = (x_next, x0_hats[rows, best])
        return x_next, calls + m, None


# ----------------------------------------------------------------------------------------------
# the sampler


def sample_value_guided(
    denoiser: DenoiserFn,
    noise: Tensor,
    sigmas: Tensor,
    value: ValueFn,
    *,
    alpha: float,
    mode: str = "gradient",
    candidates: int = 4,
    eta: float = 1.0,
    generator: Generators = None,
    return_trajectory: bool = False,
) -> SampleOutput:
    """DDIM (``eta`` in (0, 1], `sample_ddim`) steered toward p_pre(x0) exp(r(x0) / alpha)
    (module docstring: Uehara et al. 2024; DPS's value estimate v(x_t) = value(D(x_t, sigma))).

    ``mode="gradient"``: each stochastic step's mean moves by std^2 grad_{x_t} v / alpha (one
    backward per step through the network call of the step); N network calls for N steps.
    ``mode="best-of"``: each stochastic step draws ``candidates`` = M proposals and keeps per
    sample the one whose denoised estimate has the highest value (SVDD's alpha -> 0 limit; only
    alpha = inf changes it: plain DDIM); 1 + M S network calls for S stochastic steps, no
    gradients, black-box rewards allowed. ``alpha`` = inf is `sample_ddim` exactly (same
    ``generator``, same numbers). The chain starts at x_T = sigmas[0] * noise; the step to
    sigma = 0 is deterministic and unguided. Returns no per-step records.
    """
    check_value_settings(alpha, mode, candidates, eta, value)
    check_chain(noise, sigmas)
    if generator is not None and not isinstance(generator, torch.Generator):
        check_generators(generator, noise.shape[0])
    if mode == "best-of" and not math.isinf(alpha):
        step = _BestOfStep(denoiser, value, candidates, eta, generator)
    else:

        def step(i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor, to_zero: bool):
            return _gradient_step(denoiser, value, alpha, eta, generator, i, x, sigma, sigma_next, to_zero)

    out = run_chain(step, noise, sigmas, None, return_trajectory)
    out.x0 = out.x0.detach()
    if out.trajectory is not None:
        out.trajectory = [x.detach() for x in out.trajectory]
    return out


__all__ = ["VALUE_MODES", "RewardValue", "ValueFn", "check_value_settings", "sample_value_guided"]
