"""The fine-tuning config (one dataclass tree, loaded from YAML with ``key.sub=value`` overrides).

Resolution order: dataclass defaults < method preset (`PRESETS`) < YAML file < command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pirf.config import deep_merge, load_config, packaged_configs, read_yaml, resolve_config
from pirf.config.limits import (
    COUNT,
    FRACTION,
    NON_NEGATIVE,
    NON_NEGATIVE_COUNT,
    OPEN_FRACTION,
    POSITIVE,
    Limit,
)
from pirf.errors import ConfigError
from pirf.finetune.presets import PRESETS
from pirf.rewards import RewardConfig

TruncationMode = Literal["fixed", "sigma", "full", "random", "lv"]
LayerMode = Literal["high-res", "inverse", "all"]


@dataclass
class SamplerConfig:
    """The deterministic EDM Heun chain the fine-tune rolls out (PIRF Sec. 3; EDM Alg. 1).

    ``steps``: the chain's step count, and the one held-out evaluation and model selection use.
    ``steps_choices``: train one model for several step counts: each iteration draws its chain's
    step count from this list (seeded by (seed, iteration), the same on every process); pair it
    with the ``sigma`` gradient window (`TruncationConfig`), which means the same noise levels at
    every step count. Empty: every iteration uses ``steps``.
    """

    LIMITS: ClassVar[dict[str, Limit]] = {
        "steps": COUNT,
        "steps_choices": COUNT,
        "sigma_min": POSITIVE,
        "sigma_max": POSITIVE,
        "rho": POSITIVE,
    }

    steps: int = 20
    steps_choices: tuple[int, ...] = ()
    sigma_min: float = 0.002
    sigma_max: float | None = None  # None: the base model's own (80 unless it was trained wider)
    rho: float = 7.0


@dataclass
class TruncationConfig:
    """Which steps carry gradients (the gradient window).

    ``fixed``: the last ``k`` steps (DRaFT-K; PIRF's default, K = 2 at N = 20, K = 1 at N = 80);
    ``sigma``: the steps that start at a noise level sigma_i <= ``sigma`` (at least one), a window
    that means the same thing at every step count (Karras grid, rho 7: sigma = 0.045 is the last
    4 steps of 20, 2 of 10, 7 of 40, 13 of 80);
    ``full``: every step (DRaFT); ``random``: the last K' steps, K' drawn uniformly from 1..N
    once per iteration (AlignProp's randomized truncation); ``lv``: K = 1 plus ``lv_copies``
    re-noised copies of the sample pushed through the last step again (DRaFT-LV).
    """

    LIMITS: ClassVar[dict[str, Limit]] = {"k": NON_NEGATIVE_COUNT, "sigma": POSITIVE, "lv_copies": COUNT}

    mode: TruncationMode = "fixed"
    k: int = 2
    sigma: float = 0.045
    lv_copies: int = 2


@dataclass
class RegularizationConfig:
    """Weight regularization (PIRF Sec. 4.3).

    Online: ``online_lambda`` * ||theta - theta_base||^2 over the trained parameters, anchored at
    the loaded base weights; ``anchor_fixed_channels`` * the drift of the channels the reward may
    not move away from what the base model makes from the same state (`fixed_channel_drift`);
    ``anchor_chain`` * the same drift of the denoiser's estimate at one step drawn before the
    gradient window (`chain_anchor_drift`): the trained layers make every step, so a channel held
    only inside the window can still drift in the steps before it (issue 24: Poisson's f);
    ``anchor_whiten``: both anchors compare per wavenumber shell, relative to the base's power
    there (`fixed_difference`), instead of as a pixel MSE that barely sees the fine scales;
    ``anchor_spectrum`` * the mean squared log difference, per channel and wavenumber shell,
    between the batch's power spectrum and the base model's (`spectrum_anchor`): a distribution
    anchor on every channel, for benchmarks whose every channel enters the reward (Kolmogorov).
    Offline: an EMA of the weights started from the base with
    ``ema_halflife_samples`` (0 = no EMA); early stopping keeps the evaluated weights with the
    lowest held-out residual that the fidelity guard admits; at the end the interpolations
    theta_base + alpha (theta_best - theta_base) for ``alphas`` are scored the same way and the
    best candidate is saved.

    The guard (`pirf.evaluation.guard`): the fidelity score within ``fidelity_tolerance``
    (relative) of the base model's, and on every channel the spectrum, std and amplitude errors
    within max((1 + ``channel_tolerance``) x the base's, the base's + a margin):
    ``channel_spectrum_margin`` dex for the spectrum, ``channel_moment_margin`` for the relative
    std and amplitude errors.
    """

    LIMITS: ClassVar[dict[str, Limit]] = {
        "online_lambda": NON_NEGATIVE,
        "anchor_fixed_channels": NON_NEGATIVE,
        "anchor_chain": NON_NEGATIVE,
        "anchor_spectrum": NON_NEGATIVE,
        "ema_halflife_samples": NON_NEGATIVE,
        "fidelity_tolerance": NON_NEGATIVE,
        "channel_tolerance": NON_NEGATIVE,
        "channel_spectrum_margin": NON_NEGATIVE,
        "channel_moment_margin": NON_NEGATIVE,
        "alphas": FRACTION,
    }

    online_lambda: float = 0.0
    anchor_fixed_channels: float = 0.0
    anchor_chain: float = 0.0
    anchor_whiten: bool = False
    anchor_spectrum: float = 0.0
    ema_halflife_samples: float = 400.0
    early_stopping: bool = True
    fidelity_tolerance: float = 0.2
    channel_tolerance: float = 0.2
    channel_spectrum_margin: float = 0.1
    channel_moment_margin: float = 0.05
    alphas: tuple[float, ...] = (0.5, 0.75)


@dataclass
class PolicyConfig:
    """Stochastic rollouts and the policy-gradient update (DDPO, GRPO; RSM's and adjoint matching's
    rollouts too). Black et al. 2024 (DDPO); Liu et al. 2025 (Flow-GRPO).

    ``sampler``: ``ddim`` (DDIM in EDM units, DDPO's sampler), ``flow_sde`` (the Flow-GRPO SDE on a
    uniform flow-time grid), ``auto`` (ddim for EDM models, flow_sde for flow models).
    ``noise_level``: eta (ddim, default 1.0) or a (flow_sde, default 0.7). ``steps``: the rollout's
    step count (None: ``sampler.steps``; the flow SDE at a = 0.7 needs more than 20).
    ``epochs``: optimizer steps per batch of rollouts (PPO's inner epochs). ``clip``: the PPO clip
    range on the per-step ratio (log-probabilities are means over dimensions, so ratios stay near 1
    and the range is small, 1e-4 as in DDPO and Flow-GRPO). ``advantage_clip``: |A| bound (DDPO: 5).
    ``group_size``: GRPO's group, trajectories that share their starting noise. ``kl``: GRPO's
    beta on mean (mu_theta - mu_base)^2 / (2 std^2). ``timestep_fraction``: the share of the
    stochastic steps trained per batch (drawn per batch; DDPO's timestep_fraction).
    """

    LIMITS: ClassVar[dict[str, Limit]] = {
        "noise_level": POSITIVE,
        "steps": COUNT,
        "epochs": COUNT,
        "clip": POSITIVE,
        "advantage_clip": POSITIVE,
        "group_size": COUNT,
        "kl": NON_NEGATIVE,
        "timestep_fraction": Limit(low=0, high=1, low_open=True),
    }

    sampler: Literal["auto", "ddim", "flow_sde"] = "auto"
    noise_level: float | None = None
    steps: int | None = None
    epochs: int = 1
    clip: float = 1e-4
    advantage_clip: float = 5.0
    group_size: int = 4
    kl: float = 0.04
    timestep_fraction: float = 1.0


@dataclass
class RegressionConfig:
    """The methods that regress the denoiser onto a target: reward-weighted regression (``rwr``),
    reward score matching (``rsm``) and adjoint matching (``adjoint-matching``).

    All three target the KL-regularized optimum p_base(x) exp(r(x) / ``alpha``) / Z (Uehara et al.
    2024, tutorial Sec. 4), with r the objective the ``loss`` setting names (-mse or -log mse).

    ``rwr_sample_from``: ``base`` (samples of the frozen base model, weights exp(r / alpha): the
    fixed point is the tilted base exactly) or ``current`` (the model's own samples: each round
    tilts again, i.e. reward maximization at a rate set by alpha).
    ``estimator`` (rsm): ``tweedie`` (grad_x r(D_base(x_t)) through the base denoiser, DPS's value
    gradient), ``denoised`` (grad r at x0_hat, no Jacobian), ``terminal`` (grad r(x0) of the
    trajectory's own sample, reused at every step), ``zeroth`` ((r - b) z / std, b the batch
    mean, z the step's injected noise; no reward gradient). ``gamma`` (rsm): the weight on the
    estimate per noise level: ``constant`` 1, ``snr`` sd^2 / (sd^2 + sigma^2) (damps high-noise
    steps), ``inverse-snr`` sigma^2 / (sd^2 + sigma^2) (damps low-noise steps), ``auto`` (tweedie:
    constant; denoised, terminal: snr; zeroth: inverse-snr; Lee et al., Reward Score Matching).
    ``trust`` (rsm): C2, the weight of ||D_theta - D_old||^2 toward the rollout's own model.
    """

    LIMITS: ClassVar[dict[str, Limit]] = {"alpha": POSITIVE, "trust": NON_NEGATIVE}

    alpha: float = 0.1
    rwr_sample_from: Literal["base", "current"] = "current"
    estimator: Literal["tweedie", "denoised", "terminal", "zeroth"] = "tweedie"
    gamma: Literal["auto", "constant", "snr", "inverse-snr"] = "auto"
    trust: float = 0.0


@dataclass
class EvalConfig:
    """Periodic evaluation on fixed held-out seeds (never used for training)."""

    LIMITS: ClassVar[dict[str, Limit]] = {
        "every": COUNT,
        "n": Limit(low=2, integer=True),
        "seed": NON_NEGATIVE_COUNT,
        "n_reference": Limit(low=2, integer=True),
    }

    every: int = 25
    n: int = 32
    seed: int = 1_000_003
    n_reference: int = 256
    reference: str | None = None  # a data file of held-out samples; default: generated and cached


@dataclass
class FinetuneConfig:
    """Everything `finetune` needs; saved in the run folder and in every checkpoint."""

    LIMITS: ClassVar[dict[str, Limit]] = {
        "iterations": COUNT,
        "batch_size": COUNT,
        "lr": POSITIVE,
        "warmup_iterations": NON_NEGATIVE_COUNT,
        "betas": OPEN_FRACTION,
        "grad_clip": NON_NEGATIVE,
        "max_bad_steps": COUNT,
        "divergence_factor": Limit(low=1, low_open=True),
        "seed": NON_NEGATIVE_COUNT,
        "log_every": COUNT,
        "checkpoint_every": COUNT,
    }

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
    max_bad_steps: int = 10  # more skipped steps in a row than this stop the run
    divergence_factor: float = 100.0  # a chain whose median residual is this x the base's at its N is bad
    gradient_checkpointing: bool = False
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    log_every: int = 5
    checkpoint_every: int = 25


def with_model_defaults(cfg: FinetuneConfig) -> FinetuneConfig:
    """``cfg`` with the settings its base model decides filled in: ``sampler.sigma_max`` None ->
    the model's own largest noise level (its record's ``model.sigma_max``; EDM's 80 for records
    before it). The fine-tune records the filled config, and the bench compares with it."""
    if cfg.sampler.sigma_max is not None:
        return cfg
    from pirf.models.checkpoint import read_checkpoint_config  # torch: not at import
    from pirf.models.denoiser import SIGMA_MAX
    from pirf.models.loading import resolve_model

    record = read_checkpoint_config(resolve_model(cfg.base))
    sigma_max = float(record.get("model", {}).get("sigma_max", SIGMA_MAX))
    return dataclasses.replace(cfg, sampler=dataclasses.replace(cfg.sampler, sigma_max=sigma_max))


__all__ = [
    "PRESETS",
    "EvalConfig",
    "FinetuneConfig",
    "LayerMode",
    "PolicyConfig",
    "RegressionConfig",
    "RegularizationConfig",
    "SamplerConfig",
    "TruncationConfig",
    "TruncationMode",
    "check_method_name",
    "resolve_finetune_config",
    "with_model_defaults",
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
    check_method_name(method)
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
    data.setdefault("out", f"runs/finetune/{_run_name(base, benchmark, data)}-{method}")
    cfg = load_config(FinetuneConfig, None, overrides, base=data)
    _check_base_pde(cfg.base, base, benchmark, config)
    return cfg


def _check_base_pde(
    model: str, base: str | None, benchmark: str | None, config: str | os.PathLike | None
) -> None:
    """Refuse a base model of another PDE than the benchmark whose shipped settings were chosen:
    BASE named one benchmark and ``base=`` another PDE's model, or ``--config`` a shipped config
    of another benchmark."""
    from pirf import pdes

    tuned = []
    if benchmark is not None and model != base:
        tuned.append((benchmark, f"BASE {base!r} (its shipped settings)"))
    shipped = None if config is None or Path(config).is_file() else str(config).removesuffix("-gpu")
    if shipped in pdes.names():
        tuned.append((shipped, f"--config {config}"))
    if not tuned:
        return
    model_pde = _benchmark_of(model)  # None: a record without its PDE, refused when the model loads
    for pde, source in tuned:
        if model_pde is not None and model_pde != pde:
            raise ConfigError(
                f"the base model {model} is a {model_pde} model, but {source} is tuned for {pde}",
                f"give the model as BASE alone (`pirf finetune {model}`) to get the {model_pde} settings, "
                f"or pass a config of your own",
            )


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
        check_method_name(name)
    return data, tuned


def check_method_name(name: str) -> None:
    """A clear error for a method name no preset defines."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        raise ConfigError(
            f"unknown fine-tuning method {name!r}",
            ("did you mean " + repr(close[0]) + "? " if close else "") + f"methods: {', '.join(PRESETS)}",
        )


def _run_name(base: str | None, benchmark: str | None, data: dict[str, Any]) -> str:
    """The default run folder's stem: a zoo entry's name (``poisson``, ``poisson-flow``), else the
    benchmark, else the model file's stem."""
    from pirf.models.loading import zoo_pde

    if base is not None and zoo_pde(base) is not None:
        return base
    return benchmark or Path(str(data.get("base", "model"))).stem


def _benchmark_of(base: str | None) -> str | None:
    """The benchmark a BASE names: a registered PDE name, or the PDE recorded in a model file."""
    from pirf import pdes
    from pirf.models.checkpoint import read_checkpoint_config
    from pirf.models.loading import resolve_model

    if base is None or base in pdes.names():
        return base
    return read_checkpoint_config(resolve_model(base)).get("pde")
