"""Build the method a fine-tuning config names (`make_method`), and say which methods take a
reward without a gradient."""

from __future__ import annotations

from pirf.errors import ConfigError
from pirf.finetune.config import FinetuneConfig, check_method_name
from pirf.finetune.methods import Method, RewardBackprop
from pirf.finetune.policy import PolicyGradient, policy_sampler
from pirf.finetune.regression import AdjointMatching, RewardScoreMatching, RewardWeightedRegression

REWARD_BACKPROP = ("pirf", "draft-k", "draft", "draft-lv", "alignprop")
ZEROTH_ORDER = ("ddpo", "grpo", "rwr", "rsm with regression.estimator=zeroth")
"""The methods that accept a black-box reward (no gradient)."""


def make_method(cfg: FinetuneConfig, model_kind: str = "edm", sigma_data: float = 0.5) -> Method:
    """The method ``cfg.method`` names, for a model of ``model_kind`` ("edm" or "flow"; it picks
    the policy sampler) whose data scale is ``sigma_data`` (RSM's weights)."""
    name = cfg.method
    check_method_name(name)
    if name in REWARD_BACKPROP:
        return RewardBackprop(cfg.truncation, cfg.loss, name)
    if name == "rwr":
        return RewardWeightedRegression(cfg.regression, cfg.policy.epochs, cfg.loss, name)
    sampler = policy_sampler(cfg, model_kind)
    if name in ("ddpo", "grpo"):
        return PolicyGradient(sampler, cfg.policy, cfg.loss, name)
    if name == "rsm":
        return RewardScoreMatching(sampler, cfg.regression, cfg.policy, sigma_data, cfg.loss, name)
    return AdjointMatching(sampler, cfg.regression, cfg.policy, cfg.loss, name)


def refuse_black_box(method: Method) -> None:
    """The error a first-order method gives for a reward without a gradient."""
    raise ConfigError(
        f"{method.name} differentiates the reward, and this reward has no gradient (a black box)",
        f"use a method that needs no reward gradient: {', '.join(ZEROTH_ORDER)}",
    )


__all__ = ["REWARD_BACKPROP", "ZEROTH_ORDER", "make_method", "refuse_black_box"]
