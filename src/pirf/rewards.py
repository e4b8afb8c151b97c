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

A fine-tuning config chooses its reward with `RewardConfig` and `make_reward`: ``source`` None is
the residual reward above; otherwise a name registered with `register_reward` or an import path
``"package.module:attribute"`` naming a factory ``factory(pde) -> Reward | fn``, where a plain
``fn(x: np.ndarray [B, C, H, W]) -> [B]`` becomes a `BlackBoxReward`. ``black_box=True`` hides
the gradient of any reward (the residual included), so that zeroth-order methods can be compared
with gradient methods on the same reward.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pirf.errors import ConfigError, NonFiniteError, ShapeError
from pirf.pdes.base import PDE
from pirf.pdes.paper import with_residual_form


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
    """Which reward a fine-tune maximizes, and how the physics reward reads a sample.

    ``source``: None is the PDE residual reward (`ResidualReward`); else a name registered with
    `register_reward` or an import path ``"package.module:attribute"`` (see `make_reward`).
    ``black_box``: wrap the reward in a `BlackBoxReward` (numpy in, numpy out, no gradient).
    For the residual reward only: ``channels``, the channels the reward may move (None: the
    PDE's ``reward_channels``; "all" moves every channel); ``project``, apply the PDE's
    projection first; ``weights``, a weight per residual region (unnamed regions weigh 1).
    """

    channels: tuple[str, ...] | None = None
    project: bool = True
    weights: dict[str, float] = field(default_factory=dict)
    source: str | None = None
    black_box: bool = False


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
        """w(p) R(x')[p]^2 ``[B, H, W]``: the region-weighted squared residual of the prepared fields.

        A sample holding NaN or inf (a diverging model's) scores NaN everywhere instead of
        stopping the batch: the other samples keep their values, and a training loop sees a
        non-finite loss and skips the step (`pirf.training.faults`)."""
        finite = torch.isfinite(x).flatten(1).all(dim=1)
        if not bool(finite.all()):
            squares = self._weighted_squares(torch.where(finite.view(-1, 1, 1, 1), x, torch.zeros_like(x)))
            return torch.where(finite.view(-1, 1, 1), squares, torch.full_like(squares, math.nan))
        return self._weighted_squares(x)

    def _weighted_squares(self, x: Tensor) -> Tensor:
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
    """A reward computed outside autograd: ``fn(x: np.ndarray [B, C, H, W]) -> array [B]``.

    ``wraps``: the `Reward` that ``fn`` evaluates, if any (`black_box`), for ``describe``.
    """

    differentiable = False

    def __init__(
        self, fn: Callable[[np.ndarray], np.ndarray], name: str = "black-box", *, wraps: Reward | None = None
    ) -> None:
        self.fn, self.name, self.wraps = fn, name, wraps

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
        out = {"type": "black-box", "name": self.name}
        return out if self.wraps is None else out | {"wraps": self.wraps.describe()}


def black_box(reward: Reward) -> BlackBoxReward:
    """``reward`` as a black box: called on a CPU copy of the samples under `torch.no_grad`,
    numpy in and numpy out, so it gives the same numbers (on CPU) and no gradient."""
    if isinstance(reward, BlackBoxReward):
        return reward

    def fn(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return reward(torch.from_numpy(x)).double().numpy()

    return BlackBoxReward(fn, reward.describe().get("type", type(reward).__name__), wraps=reward)


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


# -- rewards declared in a config ------------------------------------------------------------------
RewardFactory = Callable[[PDE], "Reward | Callable[[np.ndarray], np.ndarray]"]
"""``factory(pde) -> Reward | fn``: a `Reward`, or a numpy ``fn(x [B, C, H, W]) -> [B]``."""

_REGISTRY: dict[str, RewardFactory] = {}


def register_reward(name: str, factory: RewardFactory, *, replace: bool = False) -> RewardFactory:
    """Register ``factory(pde) -> Reward | fn`` under ``name``, for ``RewardConfig(source=name)``;
    returns the factory. A name may not contain ':' (that marks an import path)."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ConfigError(f"reward name {name!r}", "use a non-empty name without ':'")
    if not callable(factory):
        raise ConfigError(
            f"register_reward({name!r}, {factory!r}): not callable", "give factory(pde) -> reward"
        )
    if name in _REGISTRY and _REGISTRY[name] is not factory and not replace:
        raise ConfigError(
            f"a reward named {name!r} is already registered", "pick another name, or pass replace=True"
        )
    _REGISTRY[name] = factory
    return factory


def paper_form_reward(pde: PDE) -> Reward:
    """Registered as ``paper-form``: PIRF's residual reward with the PIRF authors' residual form
    of a ``-paper`` benchmark (`pirf.pdes.paper`; Yuan et al., arXiv 2509.20570)."""
    return ResidualReward(with_residual_form(pde, "paper"))


def pirf_form_reward(pde: PDE) -> Reward:
    """Registered as ``pirf-form``: the residual reward with pirf's residual form (consistent,
    2nd order, boundary conditions on the ring) on a ``-paper`` benchmark's grid."""
    return ResidualReward(with_residual_form(pde, "pirf"))


register_reward("paper-form", paper_form_reward)
register_reward("pirf-form", pirf_form_reward)


def unregister_reward(name: str) -> None:
    """Remove a registered reward (mainly for tests and notebooks)."""
    _REGISTRY.pop(name, None)


def registered_rewards() -> list[str]:
    """Names registered with `register_reward`, sorted."""
    return sorted(_REGISTRY)


def make_reward(pde: PDE, config: RewardConfig | None = None) -> Reward:
    """The reward ``config`` declares for ``pde`` (module docstring).

    ``source`` None -> `ResidualReward` (pde, config); a registered name or
    ``"package.module:attribute"`` -> ``factory(pde)``, used as is if it is a `Reward`, wrapped
    in a `BlackBoxReward` if it is a plain callable; ``black_box`` -> the result wrapped by
    `black_box` (``differentiable`` False). Errors are `ConfigError` s that say what to fix.
    """
    config = config or RewardConfig()
    if config.source is None:
        reward: Reward = ResidualReward(pde, config)
    else:
        if config.channels is not None or config.weights:
            raise ConfigError(
                f"reward channels / weights given with source {config.source!r}",
                "channels and weights configure the PDE residual reward (source: null); "
                "a source reward reads the fields itself -- drop them",
            )
        reward = _from_factory(config.source, _factory(config.source), pde)
    return black_box(reward) if config.black_box else reward


def _factory(source: str) -> RewardFactory:
    if ":" in source:
        return _imported(source)
    if source in _REGISTRY:
        return _REGISTRY[source]
    known = registered_rewards()
    listed = f"registered: {', '.join(known)}" if known else "no reward is registered"
    if "." in source:
        module, _, attribute = source.rpartition(".")
        raise ConfigError(
            f"reward source {source!r} is neither registered nor an import path (no ':')",
            f"write an import path as 'package.module:attribute', e.g. '{module}:{attribute}'; {listed}",
        )
    close = difflib.get_close_matches(source, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"unknown reward source {source!r}",
        f"{hint}{listed}; or give an import path 'package.module:attribute' "
        "(or source: null for the PDE residual)",
    )


def _imported(source: str) -> RewardFactory:
    module_name, _, attribute = source.partition(":")
    if not module_name or not attribute:
        raise ConfigError(
            f"reward source {source!r} is not of the form 'package.module:attribute'",
            "name the module before the ':' and the factory after it, e.g. 'my_rewards:smoothness'",
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # a user's module may fail in any way: report it, don't trace it
        raise ConfigError(
            f"cannot import module {module_name!r} of reward source {source!r}: {type(err).__name__}: {err}",
            "check the module name and that its folder is on PYTHONPATH (or installed)",
        ) from None
    factory: Any = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            close = difflib.get_close_matches(attribute, public, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"module {module_name!r} has no attribute {attribute!r} (reward source {source!r})",
                f"{hint}callables there: {', '.join(public[:20]) or 'none'}",
            )
        factory = getattr(factory, part)
    if not callable(factory):
        raise ConfigError(
            f"reward source {source!r} is not callable (type {type(factory).__name__})",
            "point it at a factory `def factory(pde) -> Reward | fn`",
        )
    return factory


def _check_signature(source: str, factory: RewardFactory, pde: PDE) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: no signature to check
        return
    try:
        signature.bind(pde)
    except TypeError as err:
        raise ConfigError(
            f"the reward factory {source!r} cannot be called as factory(pde): {err}",
            "give it one parameter, the PDE: `def factory(pde) -> Reward | fn`",
        ) from None


def _from_factory(source: str, factory: RewardFactory, pde: PDE) -> Reward:
    _check_signature(source, factory, pde)
    made = factory(pde)
    if isinstance(made, Reward):
        return made
    if callable(made) and not isinstance(made, type):
        return BlackBoxReward(made, name=source)
    raise ConfigError(
        f"the reward factory {source!r} returned type {type(made).__name__} for {pde.name}",
        "return a pirf.rewards.Reward, or a function fn(x: np.ndarray [B, C, H, W]) -> np.ndarray [B]",
    )


__all__ = [
    "BlackBoxReward",
    "ResidualReward",
    "Reward",
    "RewardConfig",
    "RewardFactory",
    "WeightedSum",
    "black_box",
    "make_reward",
    "paper_form_reward",
    "pirf_form_reward",
    "register_reward",
    "registered_rewards",
    "unregister_reward",
]
