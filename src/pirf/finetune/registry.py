"""Build the method a fine-tuning config names (`make_method`) from its registration
(`pirf.finetune.presets.METHODS`), and say which methods take a reward without a gradient."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pirf.errors import ConfigError
from pirf.finetune.config import FinetuneConfig, check_method_name
from pirf.finetune.presets import METHODS

if TYPE_CHECKING:
    from pirf.finetune.methods import Method


def zeroth_order() -> list[str]:
    """The methods that accept a black-box reward (no gradient)."""
    return [
        *(name for name, entry in METHODS.items() if entry.black_box),
        "rsm with regression.estimator=zeroth",
    ]


def make_method(cfg: FinetuneConfig, model_kind: str = "edm", sigma_data: float = 0.5) -> Method:
    """The method ``cfg.method`` names, built by its registered builder for a model of
    ``model_kind`` ("edm" or "flow"; it picks the policy sampler) whose data scale is
    ``sigma_data`` (RSM's weights)."""
    check_method_name(cfg.method)
    return METHODS[cfg.method].builder()(cfg, model_kind, sigma_data)


def refuse_black_box(method: Method) -> None:
    """The error a first-order method gives for a reward without a gradient."""
    raise ConfigError(
        f"{method.name} differentiates the reward, and this reward has no gradient (a black box)",
        f"use a method that needs no reward gradient: {', '.join(zeroth_order())}",
    )


__all__ = ["make_method", "refuse_black_box", "zeroth_order"]
