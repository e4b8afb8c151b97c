"""The fine-tuning methods by name, registered in one place: each a preset of the one fine-tuner
(`pirf.finetune.config`) plus the function that builds its `Method`.

A method is one file (a `pirf.finetune.methods.Method` subclass and a builder) plus one line:

    register_method("my-method", build_my_method, preset={"truncation": {"k": 1}}, black_box=False)

``build(cfg, model_kind, sigma_data) -> Method`` gets the resolved `FinetuneConfig`, the base
model's kind ("edm" or "flow") and its data scale; ``preset`` is the method's config overlay
(defaults < preset < YAML < command line); ``black_box`` says it needs no reward gradient. The
built-in methods below name their builders as ``"module:function"`` strings, imported only when
a fine-tune builds one, so this module -- and the ``pirf`` command's help, which lists the names
-- needs no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Builder = Callable[..., Any]
"""``build(cfg: FinetuneConfig, model_kind: str, sigma_data: float) -> Method``."""


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: its builder (a callable or ``"module:function"``), config preset and
    whether it takes a reward without a gradient."""

    name: str
    build: Builder | str
    preset: dict[str, Any] = field(default_factory=dict)
    black_box: bool = False

    def builder(self) -> Builder:
        """The build function (imported on first use when given as ``"module:function"``)."""
        if callable(self.build):
            return self.build
        module, _, function = self.build.partition(":")
        return getattr(importlib.import_module(module), function)


METHODS: dict[str, MethodEntry] = {}
"""Every registered method by name, in registration order."""
PRESETS: dict[str, dict[str, Any]] = {}
"""Each method's config preset (a view kept in step with `METHODS`)."""


def register_method(
    name: str, build: Builder | str, preset: dict[str, Any] | None = None, *, black_box: bool = False
) -> MethodEntry:
    """Register fine-tuning method ``name`` (module docstring); a name may be registered once."""
    if name in METHODS:
        raise ValueError(f"a fine-tuning method named {name!r} is already registered")
    entry = MethodEntry(name, build, dict(preset or {}), black_box)
    METHODS[name] = entry
    PRESETS[name] = entry.preset
    return entry


_BACKPROP = "pirf.finetune.methods:build_reward_backprop"
_POLICY = "pirf.finetune.policy:build_policy_gradient"
_REGRESSION = "pirf.finetune.regression"
_EVERY_LAYER = {"layers": "all"}
_CHECKPOINTED = {"layers": "all", "gradient_checkpointing": True}

# Reward backprop: PIRF (Yuan et al. 2025), DRaFT and its K / LV forms (Clark et al. 2024), AlignProp
# (Prabhudesai et al. 2023).
register_method("pirf", _BACKPROP, {"truncation": {"mode": "fixed", "k": 2}, "layers": "high-res"})
register_method("draft-k", _BACKPROP, {"truncation": {"mode": "fixed", "k": 1}, **_EVERY_LAYER})
register_method("draft", _BACKPROP, {"truncation": {"mode": "full"}, **_CHECKPOINTED})
register_method("draft-lv", _BACKPROP, {"truncation": {"mode": "lv", "k": 1, "lv_copies": 2}, **_EVERY_LAYER})
register_method("alignprop", _BACKPROP, {"truncation": {"mode": "random"}, **_CHECKPOINTED})
# Policy gradient: DDPO (Black et al. 2024), GRPO (Flow-GRPO, Liu et al. 2025).
register_method("ddpo", _POLICY, {"policy": {"epochs": 2, "group_size": 1}}, black_box=True)
register_method("grpo", _POLICY, {"policy": {"epochs": 1, "group_size": 4, "kl": 0.04}}, black_box=True)
# Regression toward the tilted base: reward-weighted regression, reward score matching (zeroth-order
# with regression.estimator=zeroth), adjoint matching (Domingo-Enrich et al. 2025).
register_method("rwr", f"{_REGRESSION}:build_rwr", black_box=True)
register_method("rsm", f"{_REGRESSION}:build_rsm")
_DDIM_ETA_1 = {"policy": {"sampler": "ddim", "noise_level": 1.0}}
register_method("adjoint-matching", f"{_REGRESSION}:build_adjoint_matching", _DDIM_ETA_1)

__all__ = ["METHODS", "PRESETS", "MethodEntry", "register_method"]
