"""The settings of `pirf reconstruct` as a config: the same ``KEY=VALUE`` overrides (and ``--show``)
as every other verb; a flag and a key are one setting, the override applied last."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pirf.config.limits import COUNT, Limit
from pirf.evaluation.config import DRAW_LIMITS


@dataclass(frozen=True)
class ReconstructConfig:
    """Settings of `pirf reconstruct`: fields from sparse observations with a model as prior."""

    data: str  # held-out solver data: case i reconstructs its sample i
    observe: str  # observed share of each field, FIELD:FRACTION,... (u:0.03 inverse, a:1.0 forward)
    out: str  # output folder: reconstructions.h5, report.json/.md, figure
    n: int = 64  # cases (samples 0 .. n-1 of data)
    steps: int = 20  # Heun steps
    seed: int = 0  # seed of the masks and the noise; case i depends on (seed, i)
    method: str = "guidance"  # guidance (DiffusionPDE: observation + residual gradients) or projection
    zeta_obs: float | None = None  # guidance: observation weight (default: tuned)
    zeta_pde: float | None = None  # residual weight on the last 20% of steps (default: tuned)
    tune: int = 8  # cases after the first n that weights not given are tuned on
    batch_size: int = 16  # cases per network call
    device: str | None = None  # cpu, cuda, cuda:1 ... (default: cuda if present)
    overwrite: bool = False  # replace existing results in out

    LIMITS: ClassVar[dict[str, Limit]] = DRAW_LIMITS | {
        "zeta_obs": Limit(low=0),
        "zeta_pde": Limit(low=0),
        "tune": COUNT,
    }


__all__ = ["ReconstructConfig"]
