"""Reward fine-tuning: methods behind one loop (`finetune`), presets that name them (`PRESETS`)."""

from pirf.finetune.config import PRESETS, FinetuneConfig
from pirf.finetune.loop import FinetuneResult, finetune
from pirf.finetune.methods import Method, RewardBackprop, Rollout, make_method

__all__ = [
    "PRESETS",
    "FinetuneConfig",
    "FinetuneResult",
    "Method",
    "RewardBackprop",
    "Rollout",
    "finetune",
    "make_method",
]
