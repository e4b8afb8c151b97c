"""The settings of `pirf sample` and `pirf evaluate` as configs, so that these verbs take the same
``KEY=VALUE`` overrides (and ``--show``) as pretraining, fine-tuning and the bench.

A flag and a key are one setting: ``pirf sample darcy --n 32`` and ``pirf sample darcy n=32`` set
the same field; when both are given the ``KEY=VALUE`` override, applied last, wins. The defaults
live here only: the command line's flags take theirs from these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pirf.config.limits import COUNT, NON_NEGATIVE_COUNT, Limit
from pirf.sampling.guided import GuidanceSettings

DRAW_LIMITS: dict[str, Limit] = {"n": COUNT, "steps": COUNT, "seed": NON_NEGATIVE_COUNT, "batch_size": COUNT}
"""The ranges of the settings every verb that draws samples has (sample, evaluate, reconstruct)."""


@dataclass(frozen=True)
class SampleConfig:
    """Settings of `pirf sample`: draw samples of a model into a pirf data file."""

    out: str  # output folder: samples.h5 and samples.png
    n: int = 16  # number of samples
    steps: int = 20  # sampler steps N (Heun: 2N - 1 network calls)
    seed: int = 0  # sampling seed; sample i depends only on (seed, i)
    sampler: str | None = None  # heun (EDM Alg. 1; the default), euler, ddim or flow_sde
    batch_size: int = 64  # samples per network call
    device: str | None = None  # cpu, cuda, cuda:1 ... (default: cuda if present)
    overwrite: bool = False  # replace existing results in out
    guidance: GuidanceSettings = field(default_factory=GuidanceSettings)
    """Guidance of the chain by the model's PDE residual (none, dps, value)."""

    LIMITS: ClassVar[dict[str, Limit]] = DRAW_LIMITS


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of `pirf evaluate`: sample a model and score it beside the data floor."""

    out: str  # output folder: report.json, report.md and figures
    n: int = 256  # samples per step count
    steps: list[int] = field(default_factory=lambda: [20])  # sampler step counts, e.g. [20, 80]
    seed: int = 0  # sampling seed; sample i depends only on (seed, i)
    sampler: str = "heun"  # heun (EDM Alg. 1), euler, ddim or flow_sde
    reference: str | None = None  # held-out data file (default: solve one, cached in $PIRF_CACHE)
    n_reference: int = 256  # size of the solved reference set
    train: str | None = None  # training data for the memorization check (default: the model's own)
    batch_size: int = 64  # samples per network call
    device: str | None = None  # cpu, cuda, cuda:1 ... (default: cuda if present)
    overwrite: bool = False  # replace existing results in out

    LIMITS: ClassVar[dict[str, Limit]] = DRAW_LIMITS | {"n_reference": COUNT}


__all__ = ["DRAW_LIMITS", "EvaluateConfig", "SampleConfig"]
