"""Rewards: what a fine-tune maximizes. ``reward(x_phys [B, C, H, W]) -> [B]``, higher is better.

The physics reward of PIRF (Yuan et al. 2025, eq. 5) is the negative mean squared PDE residual

    r(x0) = -(1 / |P|) sum_{p in P} w(p) R(x0')[p]^2,

with R the benchmark's residual in physical units, x0' the sample after the PDE's projection
(Darcy: the coefficient snapped onto its two phases, PIRF Sec. 5.1) and with the channels the
reward may not move detached, and w a weight per residual region (interior / boundary /
interface; 1 by default, i.e. the plain mean over all pixels).

Which channels may move is part of the reward's design. A residual that can move the problem's
inputs (the Darcy coefficient, the Poisson source) is satisfied most cheaply by changing the
problem: on 32x32 Darcy a fine-tune with a differentiable coefficient drove ``a`` to zero and
diverged within 150 iterations. The default is the PDE's ``reward_channels``.

Black-box rewards (`BlackBoxReward`) wrap a numpy function and carry no gradient; the methods
that need one (reward backprop) refuse them, the policy-gradient family takes them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from pirf.errors import ConfigError, NonFiniteError, ShapeError
from pirf.pdes.base import PDE


class Reward(ABC):
    """A reward on physical fields: ``__call__(x [B, C, H, W]) -> [B]`` (higher is better)."""

    differentiable: bool = True

    @abstractmethod
    def __call__(self, x: Tensor) -> Tensor: ...

    def describe(self) -> dict:
        """A JSON-able description (stored in fine-tuning checkpoints)."""
        return {"type": type(self).__name__}


@dataclass(frozen=True)
class RewardConfig:
    """How the physics reward reads a sample.

    ``channels``: the channels the reward may move (None: the PDE's ``reward_channels``; "all"
    moves every channel). ``project``: apply the PDE's projection first. ``weights``: a weight
    per residual region (unnamed regions weigh 1).
    """

    channels: tuple[str, ...] | None = None
    project: bool = True
    weights: dict[str, float] = field(default_factory=dict)


class ResidualReward(Reward):
    """PIRF's reward, r(x0) = -weighted mean of R(x0')^2 (see the module docstring)."""

    differentiable = True

    def __init__(self, pde: PDE, config: RewardConfig | None = None) -> None:
        self.pde, self.config = pde, config or RewardConfig()
        self.movable = _movable_channels(pde, self.config.channels)
        unknown = set(self.config.weights) - _region_names(pde)
        if unknown:
            raise ConfigError(
                f"reward weights for unknown residual regions {sorted(unknown)}",
                f"{pde.name} has regions: {', '.join(sorted(_region_names(pde)))}",
            )

    def prepare(self, x: Tensor) -> Tensor:
        """The fields the residual sees: projected, with the fixed channels detached."""
        if self.config.project:
            x = self.pde.project(x)
        keep = torch.tensor([name in self.movable for name in self.pde.fields], device=x.device)
        return torch.where(keep.view(1, -1, 1, 1), x, x.detach())

    def weighted_squares(self, x: Tensor) -> Tensor:
        """w(p) R(x')[p]^2 ``[B, H, W]``: the region-weighted squared residual of the prepared fields."""
        x = self.prepare(x)
        squared = self.pde.residual(x).pow(2)
        if not self.config.weights:
            return squared
        weight = torch.ones_like(squared)
        for part, mask in self.pde.regions(x).items():
            weight = torch.where(mask, torch.as_tensor(self.config.weights.get(part, 1.0)), weight)
        return weight * squared

    def residual_mse(self, x: Tensor) -> Tensor:
        """The weighted mean squared residual ``[B]`` (= -reward)."""
        return self.weighted_squares(x).mean(dim=(1, 2))

    def residual_norm(self, x: Tensor) -> Tensor:
        """The (weighted) L2 norm of the residual ``[B]``, ||R(x')||_2 = sqrt(sum_p w R^2): the
        quantity DPS guidance and CoCoGen descend (DiffusionPDE). A floor of 1e-24 under the
        root keeps its gradient finite at R = 0."""
        return (self.weighted_squares(x).sum(dim=(1, 2)) + 1e-24).sqrt()

    def __call__(self, x: Tensor) -> Tensor:
        return -self.residual_mse(x)

    def describe(self) -> dict:
        return {
            "type": "residual",
            "pde": self.pde.name,
            "movable": list(self.movable),
            "project": self.config.project,
            "weights": dict(self.config.weights),
        }


def _region_names(pde: PDE) -> set[str]:
    probe = torch.zeros(1, len(pde.fields), pde.min_resolution, pde.min_resolution)
    return set(pde.regions(probe)) | {"all"}


def _movable_channels(pde: PDE, channels: Sequence[str] | None) -> tuple[str, ...]:
    if channels is None:
        return tuple(pde.reward_channels or pde.fields)
    if tuple(channels) == ("all",):
        return tuple(pde.fields)
    unknown = [c for c in channels if c not in pde.fields]
    if unknown or not channels:
        raise ConfigError(
            f"reward channels {list(channels)} for {pde.name}",
            f"name some of its channels {list(pde.fields)}, or 'all'",
        )
    return tuple(channels)


class BlackBoxReward(Reward):
    """A reward computed outside autograd: ``fn(x: np.ndarray [B, C, H, W]) -> array [B]``."""

    differentiable = False

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], name: str = "black-box") -> None:
        self.fn, self.name = fn, name

    def __call__(self, x: Tensor) -> Tensor:
        values = np.asarray(self.fn(x.detach().cpu().numpy()), dtype=np.float64)
        if values.shape != (x.shape[0],):
            raise ShapeError(
                f"black-box reward {self.name!r} returned shape {values.shape} for a batch of {x.shape[0]}",
                "return one number per sample",
            )
        if not np.isfinite(values).all():
            raise NonFiniteError(f"black-box reward {self.name!r} returned NaN or inf")
        return torch.as_tensor(values, dtype=x.dtype, device=x.device)

    def describe(self) -> dict:
        return {"type": "black-box", "name": self.name}


class WeightedSum(Reward):
    """r(x) = sum_i w_i r_i(x); differentiable only if every term is."""

    def __init__(self, terms: Mapping[str, tuple[float, Reward]]) -> None:
        if not terms:
            raise ConfigError("a weighted sum of rewards needs at least one term")
        self.terms = dict(terms)
        self.differentiable = all(reward.differentiable for _, reward in self.terms.values())

    def __call__(self, x: Tensor) -> Tensor:
        return sum(weight * reward(x) for weight, reward in self.terms.values())

    def describe(self) -> dict:
        return {"type": "sum", "terms": {k: [w, r.describe()] for k, (w, r) in self.terms.items()}}


__all__ = ["BlackBoxReward", "ResidualReward", "Reward", "RewardConfig", "WeightedSum"]
