"""The fine-tuning config (one dataclass tree, loaded from YAML with ``key.sub=value`` overrides).

Resolution order: dataclass defaults < method preset (`PRESETS`) < YAML file < command line.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pirf.config import deep_merge, load_config, packaged_configs, read_yaml, resolve_config
from pirf.errors import ConfigError
from pirf.rewards import RewardConfig

TruncationMode = Literal["fixed", "full", "random", "lv"]
LayerMode = Literal["high-res", "inverse", "all"]


@dataclass
class SamplerConfig:
    """The deterministic EDM Heun chain the fine-tune rolls out (PIRF Sec. 3; EDM Alg. 1)."""

    steps: int = 20
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0


@dataclass
class TruncationConfig:
    """Which steps carry gradients (the gradient window).

    ``fixed``: the last ``k`` steps (DRaFT-K; PIRF's default, K = 2 at N = 20, K = 1 at N = 80);
    ``full``: every step (DRaFT); ``random``: the last K' steps, K' drawn uniformly from 1..N
    once per iteration (AlignProp's randomized truncation); ``lv``: K = 1 plus ``lv_copies``
    re-noised copies of the sample pushed through the last step again (DRaFT-LV).
    """

    mode: TruncationMode = "fixed"
    k: int = 2
    lv_copies: int = 2


@dataclass
class RegularizationConfig:
    """Weight regularization (PIRF Sec. 4.3).

    Online: ``online_lambda`` * ||theta - theta_base||^2 over the trained parameters, anchored at
    the loaded base weights; ``anchor_fixed_channels`` * the drift of the channels the reward may
    not move away from what the base model makes from the same state (`fixed_channel_drift`).
    Offline: an EMA of the weights started from the base with
    ``ema_halflife_samples`` (0 = no EMA); early stopping keeps the evaluated weights with the
    lowest held-out residual whose fidelity score stays within ``fidelity_tolerance`` (relative)
    of the base model's; at the end the interpolations theta_base + alpha (theta_best -
    theta_base) for ``alphas`` are scored the same way and the best candidate is saved.
    """

    online_lambda: float = 0.0
    anchor_fixed_channels: float = 0.0
    ema_halflife_samples: float = 400.0
    early_stopping: bool = True
    fidelity_tolerance: float = 0.2
    alphas: tuple[float, ...] = (0.5, 0.75)


@dataclass
class EvalConfig:
    """Periodic evaluation on fixed held-out seeds (never used for training)."""

    every: int = 25
    n: int = 32
    seed: int = 1_000_003
    n_reference: int = 256
    reference: str | None = None  # a data file of held-out samples; default: generated and cached


@dataclass
class FinetuneConfig:
    """Everything `finetune` needs; saved in the run folder and in every checkpoint."""

    method: str = "pirf"
    base: str = "darcy"  # a benchmark with a shipped model, a run folder or a model file
    out: str = "runs/finetune"
    iterations: int = 200
    batch_size: int = 8  # trajectories per iteration (global, over all processes)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    truncation: TruncationConfig = field(default_factory=TruncationConfig)
    layers: LayerMode = "high-res"
    reward: RewardConfig = field(default_factory=RewardConfig)
    loss: Literal["mse", "log-mse"] = "log-mse"
    lr: float = 1e-4
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    warmup_iterations: int = 10
    betas: tuple[float, ...] = (0.9, 0.999)
    grad_clip: float = 1.0
    max_bad_steps: int = 10
    gradient_checkpointing: bool = False
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    log_every: int = 5
    checkpoint_every: int = 25


PRESETS: dict[str, dict[str, Any]] = {
    "pirf": {"truncation": {"mode": "fixed", "k": 2}, "layers": "high-res"},
    "draft-k": {"truncation": {"mode": "fixed", "k": 1}, "layers": "all"},
    "draft": {"truncation": {"mode": "full"}, "layers": "all", "gradient_checkpointing": True},
    "draft-lv": {"truncation": {"mode": "lv", "k": 1, "lv_copies": 2}, "layers": "all"},
    "alignprop": {"truncation": {"mode": "random"}, "layers": "all", "gradient_checkpointing": True},
}
"""Reward-backprop methods as named presets of one fine-tuner (REFERENCE sec. 1 and 4)."""

__all__ = [
    "PRESETS",
    "EvalConfig",
    "FinetuneConfig",
    "LayerMode",
    "RegularizationConfig",
    "SamplerConfig",
    "TruncationConfig",
    "TruncationMode",
    "resolve_finetune_config",
]


def resolve_finetune_config(
    base: str | None,
    method: str | None,
    config: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
) -> FinetuneConfig:
    """The config of ``pirf finetune BASE --method M [--config FILE] [key=value ...]``.

    Layers, in increasing priority: dataclass defaults < the shipped config of the benchmark
    (``configs/finetune/<pde>.yaml``: tuned lr, iterations, evaluation) < the method's preset
    (what defines the method: truncation, layers) < the benchmark config's ``methods.<M>``
    section (values tuned for that method on that benchmark, e.g. PIRF's window K) < ``config``
    (a file or a shipped name; it may hold a ``methods`` section too) < ``overrides``. BASE and
    M, when given, set ``base`` and ``method``.
    """
    benchmark = _benchmark_of(base)
    shipped = (
        read_yaml(resolve_config("finetune", benchmark)) if benchmark in packaged_configs("finetune") else {}
    )
    shipped, shipped_tuned = _split_methods(shipped)
    user, user_tuned = _split_methods(
        read_yaml(resolve_config("finetune", config)) if config is not None else {}
    )
    method = method or user.get("method") or shipped.get("method") or "pirf"
    _check_method(method)
    data: dict[str, Any] = {}
    for layer in (
        shipped,
        PRESETS[method] | {"method": method},
        shipped_tuned.get(method),
        user,
        user_tuned.get(method),
    ):
        data = deep_merge(data, layer or {})
    data["method"] = method  # an explicit --method beats a file's `method:`
    if base is not None:
        data["base"] = str(base)
    data.setdefault("out", f"runs/finetune/{benchmark or Path(str(data.get('base', 'model'))).stem}-{method}")
    return load_config(FinetuneConfig, None, overrides, base=data)


METHOD_SECTION = "methods"
"""Key of a benchmark config's per-method section: ``methods: {pirf: {truncation: {k: 4}}}``."""


def _split_methods(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config without its ``methods`` section, the section), every method in it checked."""
    data = dict(data)
    tuned = data.pop(METHOD_SECTION, None) or {}
    if not isinstance(tuned, dict):
        raise ConfigError(
            f"'{METHOD_SECTION}' must map method names to settings", "e.g. methods: {pirf: {lr: 1e-4}}"
        )
    for name in tuned:
        _check_method(name)
    return data, tuned


def _check_method(method: str) -> None:
    if method not in PRESETS:
        close = difflib.get_close_matches(method, list(PRESETS), n=1)
        raise ConfigError(
            f"unknown fine-tuning method {method!r}",
            ("did you mean " + repr(close[0]) + "? " if close else "") + f"methods: {', '.join(PRESETS)}",
        )


def _benchmark_of(base: str | None) -> str | None:
    """The benchmark a BASE names: a registered PDE name, or the PDE recorded in a model file."""
    from pirf import pdes
    from pirf.evaluation.runner import resolve_model
    from pirf.models.checkpoint import read_checkpoint_config

    if base is None or base in pdes.names():
        return base
    return read_checkpoint_config(resolve_model(base)).get("pde")
