"""The bench config: which benchmarks and rows, how many samples, the baselines' sweeps.

Rows (`ROWS`) are the methods of the comparison table (PIRF Table 1 and its ablations):

- ``data``: held-out solver samples (the residual floor of the data itself);
- ``base``: the base EDM model, deterministic Heun;
- ``dps``: DPS-style residual guidance on the last 20% of the steps (DiffusionPDE), its step
  size swept on separate seeds;
- ``cocogen``: DPS guidance plus CoCoGen's correction steps on the final sample, swept likewise;
- ``pidm``: the base model trained on with PIDM's physics-informed loss;
- ``pgdiffusion``: the base model trained on as PG-Diffusion (a network that reads the residual
  gradient, `pirf.training.pgdiffusion`), sampled with its guided Euler chain;
- ``pirf``: PIRF with the benchmark's shipped fine-tune config;
- ``pirf-<ablation>``: PIRF with one change (`ABLATIONS`): the gradient window K, the layers
  trained, the weight regularization, the step count it is fine-tuned at;
- the reward-fine-tuning family (`FAMILY`, ``pirf bench --family rsm``): the other methods of
  ``pirf finetune`` with the same budget (the benchmark's shipped fine-tune config, only the
  method changed), and the zeroth-order ones again on a black-box copy of the reward (``-bb``).

Resolution: dataclass defaults < the shipped scale config (``configs/bench/<scale>.yaml``) <
``--config`` file < ``key=value`` overrides.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from pirf.config import load_config, read_yaml, resolve_config
from pirf.config.limits import COUNT, FRACTION, NON_NEGATIVE, NON_NEGATIVE_COUNT, POSITIVE, Limit
from pirf.errors import ConfigError, UnknownNameError

BASELINES = ("data", "base", "dps", "cocogen", "pidm", "pgdiffusion", "pirf")
NOREG = (
    "regularization.ema_halflife_samples=0",
    "regularization.early_stopping=false",
    "regularization.alphas=[]",
    "regularization.fidelity_tolerance=1e9",
    "regularization.channel_tolerance=1e9",
)
ABLATIONS: dict[str, tuple[str, ...]] = {
    "pirf-k1": ("truncation.k=1",),
    "pirf-k2": ("truncation.k=2",),
    "pirf-inverse": ("layers=inverse",),
    "pirf-all": ("layers=all",),
    "pirf-noreg": NOREG,
    "pirf-online": (*NOREG, "regularization.online_lambda=1.0"),
    "pirf-n80": ("sampler.steps=80", "truncation.k=14", "iterations=150"),
}
"""Fine-tune overrides of each PIRF ablation, on top of the benchmark's shipped PIRF config.

``noreg`` drops the offline regularization (no EMA, no early stopping, no interpolation, no
fidelity guard on the score or the channels: the last weights; the table still marks what the
guard would refuse); ``online`` puts lambda ||theta - theta_base||^2 in its place.
Both keep the anchor on the channels the reward cannot see, which is part of the reward's design,
not a weight regularization. ``n80`` fine-tunes at N = 80 with K = 14, the window that starts at
the same noise level as K = 4 of 20 (sigma ~ 0.05), for 150 iterations: one costs ~4x one at N = 20
(80 steps, 14 with a graph), and with the shipped configs' constant learning rate these are the
first 150 iterations of the 350-iteration run.
"""
FAMILY: dict[str, tuple[str, tuple[str, ...]]] = {
    "draft": ("draft", ()),
    "alignprop": ("alignprop", ()),
    "ddpo": ("ddpo", ()),
    "grpo": ("grpo", ()),
    "rwr": ("rwr", ()),
    "rsm": ("rsm", ()),
    "rsm-zeroth": ("rsm", ("regression.estimator=zeroth",)),
    "adjoint-matching": ("adjoint-matching", ()),
    "ddpo-bb": ("ddpo", ("reward.black_box=true",)),
    "grpo-bb": ("grpo", ("reward.black_box=true",)),
    "rwr-bb": ("rwr", ("reward.black_box=true",)),
    "rsm-zeroth-bb": ("rsm", ("regression.estimator=zeroth", "reward.black_box=true")),
}
"""Family rows: (the `pirf finetune` method, its overrides on the benchmark's shipped config)."""
FAMILIES: dict[str, tuple[str, ...]] = {"rsm": ("data", "base", "pirf", *FAMILY)}
"""``pirf bench --family NAME``: the rows of a comparison (``rsm``: reward score matching's family)."""
MAIN_ROWS = (*BASELINES, *ABLATIONS)
ROWS = (*MAIN_ROWS, *FAMILY)
TRAINED_ROWS = ("pidm", "pgdiffusion", "pirf", *ABLATIONS, *FAMILY)
GRADIENT_ROWS = ("dps", "cocogen", "pgdiffusion")
"""Rows that need gradients at test time (a backward pass through the network or the residual)."""


@dataclass
class DPSConfig:
    """DPS guidance (Chung et al. 2023; DiffusionPDE, Huang et al. 2024): x -= zeta grad ||R(D(x))||_2
    on the last ``fraction`` of the steps; every zeta is tried on the sweep seeds, the best admissible
    one is reported."""

    zetas: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
    fraction: float = 0.2


@dataclass
class CoCoGenConfig:
    """CoCoGen: the best DPS chain, then ``corrections`` steps x -= zeta_c grad ||R(x)||_2 on the
    final sample; every (M, zeta_c) pair is tried on the sweep seeds."""

    corrections: tuple[int, ...] = (1, 3, 5)
    zetas: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


@dataclass
class ContinuedTraining:
    """How a training-based baseline continues the base model's training (`pirf.bench.models`):
    optimizer steps, batch, learning rate and warm-up."""

    LIMITS: ClassVar[dict[str, Limit]] = {
        "steps": COUNT,
        "batch_size": COUNT,
        "lr": POSITIVE,
        "warmup_steps": NON_NEGATIVE_COUNT,
    }

    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-4
    warmup_steps: int = 20


@dataclass
class PIDMConfig(ContinuedTraining):
    """PIDM: continue the base model's training with EDM + c R(x0_hat)^2 / (2 sigma)
    (`pirf.training.pidm`); ``weight`` is c, ``weights`` overrides it per benchmark."""

    LIMITS: ClassVar[dict[str, Limit]] = {**ContinuedTraining.LIMITS, "weight": NON_NEGATIVE}

    weight: float = 0.01
    weights: dict[str, float] = field(default_factory=dict)

    def weight_for(self, benchmark: str) -> float:
        return self.weights.get(benchmark, self.weight)


@dataclass
class PGDiffusionConfig(ContinuedTraining):
    """PG-Diffusion: continue the base model's training with a physics-guide path and guide dropout
    (`pirf.training.pgdiffusion`), warm-started so that it starts as the base model."""

    LIMITS: ClassVar[dict[str, Limit]] = {**ContinuedTraining.LIMITS, "guide_dropout": FRACTION}

    guide_dropout: float = 0.5


@dataclass
class BenchConfig:
    """Everything `run_bench` needs (see the module docstring for the rows)."""

    LIMITS: ClassVar[dict[str, Limit]] = {
        "n": Limit(low=2, integer=True),
        "steps": COUNT,
        "transfer_steps": COUNT,
        "family_steps": COUNT,
        "seed": NON_NEGATIVE_COUNT,
        "sweep_n": Limit(low=2, integer=True),
        "sweep_seed": NON_NEGATIVE_COUNT,
        "fidelity_tolerance": NON_NEGATIVE,
        "channel_tolerance": NON_NEGATIVE,
        "channel_spectrum_margin": NON_NEGATIVE,
        "channel_moment_margin": NON_NEGATIVE,
        "n_reference": Limit(low=2, integer=True),
        "batch_size": COUNT,
    }

    scale: str = "cpu"
    out: str = "runs/bench/cpu"
    benchmarks: tuple[str, ...] = ("darcy", "poisson", "helmholtz", "burgers", "kolmogorov")
    methods: tuple[str, ...] = MAIN_ROWS
    base: str = "{benchmark}"  # the base model: a spec, or "pretrain:<config>" to train it here first
    finetune_config: str = ""  # the PIRF fine-tune config; "" = the benchmark's shipped one
    finetune_overrides: tuple[str, ...] = ()  # applied to every PIRF fine-tune of the bench
    n: int = 128  # samples per cell, seeds (seed, i)
    steps: tuple[int, ...] = (20, 80)
    transfer_steps: tuple[int, ...] = (40,)  # extra step counts for `transfer_rows`
    transfer_rows: tuple[str, ...] = ("base", "pirf", "pirf-n80")
    family_steps: tuple[int, ...] = (20,)  # the step counts family rows are sampled at
    seed: int = 0
    sweep_n: int = 32  # samples per setting of the guidance sweeps, seeds (sweep_seed, i)
    sweep_seed: int = 1
    fidelity_tolerance: float = 0.2  # a swept setting must keep fidelity within this of the base
    channel_tolerance: float = 0.2  # ... and each channel's terms (`pirf.evaluation.guard`)
    channel_spectrum_margin: float = 0.1  # dex
    channel_moment_margin: float = 0.05  # relative std and amplitude errors
    n_reference: int = 256
    batch_size: int = 64
    device: str | None = None
    dps: DPSConfig = field(default_factory=DPSConfig)
    cocogen: CoCoGenConfig = field(default_factory=CoCoGenConfig)
    pidm: PIDMConfig = field(default_factory=PIDMConfig)
    pgdiffusion: PGDiffusionConfig = field(default_factory=PGDiffusionConfig)

    def steps_for(self, row: str) -> tuple[int, ...]:
        """The step counts a row is sampled at."""
        if row in FAMILY:
            return tuple(sorted(self.family_steps))
        extra = self.transfer_steps if row in self.transfer_rows else ()
        return tuple(sorted(set(self.steps) | set(extra)))


def check_names(kind: str, given: Sequence[str], valid: Sequence[str]) -> tuple[str, ...]:
    """``given`` in the order of ``valid``, every name checked (an unknown one names the closest)."""
    for name in given:
        if name not in valid:
            close = difflib.get_close_matches(name, list(valid), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownNameError(f"unknown {kind} {name!r}", f"{hint}use some of: {', '.join(valid)}")
    return tuple(name for name in valid if name in given)


def resolve_bench_config(
    scale: str = "cpu",
    config: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    *,
    benchmarks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    family: str | None = None,
) -> BenchConfig:
    """The config of ``pirf bench --scale S [--config F] [--benchmarks ...] [--methods ...]
    [--family NAME] [k=v ...]``; a family names its rows (`FAMILIES`), ``methods`` picks among them."""
    from pirf import pdes

    shipped = read_yaml(resolve_config("bench", scale))
    user = read_yaml(resolve_config("bench", config)) if config is not None else {}
    cfg = load_config(BenchConfig, None, overrides, base={**shipped, **user, "scale": scale})
    if benchmarks:
        cfg.benchmarks = tuple(benchmarks)
    if family is not None:
        if family not in FAMILIES:
            raise UnknownNameError(f"unknown method family {family!r}", f"use one of: {', '.join(FAMILIES)}")
        cfg.methods = FAMILIES[family]
    if methods:
        cfg.methods = check_names("method", methods, cfg.methods if family else ROWS)
    cfg.benchmarks = check_names("benchmark", cfg.benchmarks, pdes.names())
    cfg.methods = check_names("method", cfg.methods, ROWS)
    if not cfg.benchmarks or not cfg.methods:
        raise ConfigError("the bench has no benchmark or no method to run", "name at least one of each")
    if cfg.n < 2 or cfg.sweep_n < 2:
        raise ConfigError(
            f"n = {cfg.n}, sweep_n = {cfg.sweep_n}", "use at least 2 samples per cell and sweep"
        )
    return cfg


__all__ = [
    "ABLATIONS",
    "BASELINES",
    "FAMILIES",
    "FAMILY",
    "GRADIENT_ROWS",
    "MAIN_ROWS",
    "ROWS",
    "TRAINED_ROWS",
    "BenchConfig",
    "CoCoGenConfig",
    "DPSConfig",
    "PGDiffusionConfig",
    "PIDMConfig",
    "check_names",
    "resolve_bench_config",
]
