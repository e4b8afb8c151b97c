"""Reward fine-tuning: methods behind one loop (`finetune`), presets that name them (`PRESETS`)."""

from pirf.finetune.config import PRESETS, FinetuneConfig
from pirf.finetune.loop import FinetuneResult, finetune
from pirf.finetune.methods import Method, RewardBackprop, Rollout
from pirf.finetune.policy import PolicyGradient
from pirf.finetune.registry import ZEROTH_ORDER, make_method
from pirf.finetune.regression import AdjointMatching, RewardScoreMatching, RewardWeightedRegression

__all__ = [
    "PRESETS",
    "ZEROTH_ORDER",
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
]
