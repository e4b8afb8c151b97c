"""Reward fine-tuning: methods behind one loop (`finetune`), registered by name in one place
(`register_method`, `METHODS`; their config presets: `PRESETS`).

The names below load on first use: ``import pirf.finetune.presets`` (what the `pirf` command
needs for its help) does not import torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pirf.finetune.config import FinetuneConfig
    from pirf.finetune.loop import FinetuneResult, finetune
    from pirf.finetune.methods import Method, RewardBackprop, Rollout
    from pirf.finetune.policy import PolicyGradient
    from pirf.finetune.presets import METHODS, PRESETS, register_method
    from pirf.finetune.registry import make_method, zeroth_order
    from pirf.finetune.regression import AdjointMatching, RewardScoreMatching, RewardWeightedRegression

_HOMES = {
    "METHODS": "presets",
    "PRESETS": "presets",
    "register_method": "presets",
    "FinetuneConfig": "config",
    "FinetuneResult": "loop",
    "finetune": "loop",
    "Method": "methods",
    "RewardBackprop": "methods",
    "Rollout": "methods",
    "PolicyGradient": "policy",
    "zeroth_order": "registry",
    "make_method": "registry",
    "AdjointMatching": "regression",
    "RewardScoreMatching": "regression",
    "RewardWeightedRegression": "regression",
}
"""Each public name -> the submodule that defines it."""


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` (or is ``name``) on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")  # a submodule: `pirf.finetune.loop`
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "METHODS",
    "PRESETS",
    "AdjointMatching",
    "FinetuneConfig",
    "FinetuneResult",
    "Method",
    "PolicyGradient",
    "RewardBackprop",
    "RewardScoreMatching",
    "RewardWeightedRegression",
    "Rollout",
    "finetune",
    "make_method",
    "register_method",
    "zeroth_order",
]
