"""Reconstruction chains: a prior's sampling chain steered toward sparse observations.

Every method runs EDM's deterministic Heun chain (Karras et al. 2022, Alg. 1) on the model's
own grid, in the model's normalized space, from per-case seeded noise; the observations
``y = M * x_true`` (mask M, normalized values) enter as follows.

- **guidance** (DiffusionPDE, Huang et al. 2024): after each Heun step,

      x_{i+1} <- x_{i+1} - grad_{x_i} [ w_obs(i) ||M (D(x_i) - y)||_2 + w_pde(i) ||R(D(x_i))||_2 ],

  with w_obs = zeta_obs and w_pde = 0 on the first (1 - pde_fraction) of the steps, and
  w_obs = late_obs_scale * zeta_obs, w_pde = zeta_pde on the rest (DiffusionPDE: the last 20%,
  observation weight x 0.1). R is the PDE residual of the denoised fields in physical units
  (`pirf.rewards.ResidualReward.residual_norm`, the quantity pirf's DPS baseline descends). The
  gradient is taken through one network call at the state the step started from (as pirf's DPS;
  DiffusionPDE's script differentiates through the step's last call instead). One backward pass
  through the network per step.
- **projection**: the observed pixels of every denoised estimate are replaced by the
  observations, D'(x, sigma) = M y + (1 - M) D(x, sigma), and the chain runs on D' -- the
  gradient-free hard constraint of ECI sampling (Cheng et al. 2025) and PCFM (Utkarsh et al.
  2025) for a linear observation operator: the reconstruction matches y exactly where observed,
  at the cost of plain sampling. With ``zeta_pde`` > 0 the last ``pde_fraction`` of the steps
  also descend ||R(D'(x_i))||_2 as above.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from pirf.errors import ConfigError
from pirf.sampling.chain import DenoiserFn, SampleOutput, run_chain
from pirf.sampling.guidance import loss_gradient
from pirf.sampling.samplers import heun_step

ResidualNorm = Callable[[Tensor], Tensor]
"""``residual_norm(x0 [B, C, H, W]) -> [B]``: ||R||_2 of model-space fields (physical residual)."""


@dataclass(frozen=True)
class Observations:
    """What a reconstruction sees, in the model's normalized space: ``mask`` (1 where observed,
    0 elsewhere) and ``values`` (the normalized truth where observed, 0 elsewhere), ``[B, C, H, W]``."""

    mask: Tensor
    values: Tensor

    def misfit(self, x0: Tensor) -> Tensor:
        """||M (x0 - y)||_2 per sample ``[B]`` (a floor of 1e-24 keeps the gradient finite at 0)."""
        return ((self.mask * (x0 - self.values)) ** 2).sum(dim=(1, 2, 3)).add(1e-24).sqrt()

    def impose(self, x0: Tensor) -> Tensor:
        """M y + (1 - M) x0: the observed pixels replaced by the observations."""
        return self.mask * self.values + (1 - self.mask) * x0


def _check_weight(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} = {value}", f"use a finite {name} >= 0")


def _late_start(n: int, fraction: float) -> int:
    """Index of the first of the last round(fraction n) steps of an n-step chain."""
    return n - round(fraction * n)


@dataclass(frozen=True)
class Guidance:
    """DiffusionPDE's observation and PDE-residual guidance (module docstring)."""

    name: ClassVar[str] = "guidance"
    zeta_obs: float
    zeta_pde: float = 0.0
    pde_fraction: float = 0.2
    late_obs_scale: float = 0.1

    def __post_init__(self) -> None:
        _check_weight("zeta_obs", self.zeta_obs)
        _check_weight("zeta_pde", self.zeta_pde)
        _check_weight("late_obs_scale", self.late_obs_scale)
        if not 0.0 <= self.pde_fraction <= 1.0:
            raise ConfigError(f"pde_fraction = {self.pde_fraction}", "use a fraction of the steps in [0, 1]")

    def weights(self, i: int, n: int) -> tuple[float, float]:
        """(w_obs, w_pde) of step i of n."""
        if i < _late_start(n, self.pde_fraction):
            return self.zeta_obs, 0.0
        return self.late_obs_scale * self.zeta_obs, self.zeta_pde

    def run(
        self, denoiser: DenoiserFn, noise: Tensor, sigmas: Tensor, obs: Observations, residual: ResidualNorm
    ) -> SampleOutput:
        """The guided Heun chain; ``nfe`` counts the network call of each gradient too."""
        n = sigmas.shape[0] - 1

        def step(i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor, to_zero: bool):
            x_next, calls, _ = heun_step(denoiser, i, x, sigma, sigma_next, to_zero)
            w_obs, w_pde = self.weights(i, n)
            if w_obs == 0 and w_pde == 0:
                return x_next, calls, None

            def loss(x0: Tensor) -> Tensor:
                value = w_obs * obs.misfit(x0)
                return value + w_pde * residual(x0) if w_pde else value

            grad = loss_gradient(loss, x, denoiser, sigma)
            return x_next.detach() - grad, calls + 1, None

        return run_chain(step, noise, sigmas, None, False)

    def gradient_steps(self, n: int) -> int:
        """Steps of an n-step chain that take a gradient (one backward pass each)."""
        return sum(1 for i in range(n) if any(self.weights(i, n)))

    def settings(self) -> dict[str, float]:
        return {
            "zeta_obs": self.zeta_obs,
            "zeta_pde": self.zeta_pde,
            "pde_fraction": self.pde_fraction,
            "late_obs_scale": self.late_obs_scale,
        }


@dataclass(frozen=True)
class Projection:
    """Hard replacement of the observed pixels in every denoised estimate (module docstring)."""

    name: ClassVar[str] = "projection"
    zeta_pde: float = 0.0
    pde_fraction: float = 0.2

    def __post_init__(self) -> None:
        _check_weight("zeta_pde", self.zeta_pde)
        if not 0.0 <= self.pde_fraction <= 1.0:
            raise ConfigError(f"pde_fraction = {self.pde_fraction}", "use a fraction of the steps in [0, 1]")

    def run(
        self, denoiser: DenoiserFn, noise: Tensor, sigmas: Tensor, obs: Observations, residual: ResidualNorm
    ) -> SampleOutput:
        """Heun on D' = M y + (1 - M) D; with zeta_pde > 0, residual guidance on the last steps."""
        n = sigmas.shape[0] - 1
        late = _late_start(n, self.pde_fraction)

        def projected(x: Tensor, sigma: Tensor) -> Tensor:
            return obs.impose(denoiser(x, sigma))

        def step(i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor, to_zero: bool):
            x_next, calls, _ = heun_step(projected, i, x, sigma, sigma_next, to_zero)
            if self.zeta_pde == 0 or i < late:
                return x_next, calls, None
            grad = loss_gradient(lambda x0: self.zeta_pde * residual(x0), x, projected, sigma)
            return x_next.detach() - grad, calls + 1, None

        return run_chain(step, noise, sigmas, None, False)

    def gradient_steps(self, n: int) -> int:
        return 0 if self.zeta_pde == 0 else n - _late_start(n, self.pde_fraction)

    def settings(self) -> dict[str, float]:
        return {"zeta_pde": self.zeta_pde, "pde_fraction": self.pde_fraction}


Method = Guidance | Projection
METHODS: dict[str, type[Guidance] | type[Projection]] = {"guidance": Guidance, "projection": Projection}
"""The reconstruction methods by name (`pirf reconstruct --method`)."""


@torch.no_grad()
def run_method(
    method: Method,
    denoiser: DenoiserFn,
    noise: Tensor,
    sigmas: Tensor,
    obs: Observations,
    residual: ResidualNorm,
) -> SampleOutput:
    """``method``'s chain under `torch.no_grad` (its gradients are taken inside, detached)."""
    return method.run(denoiser, noise, sigmas, obs, residual)


__all__ = ["METHODS", "Guidance", "Method", "Observations", "Projection", "ResidualNorm", "run_method"]
