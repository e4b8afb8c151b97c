"""Weight regularization toward the base model (PIRF Sec. 4.3).

Online: the penalty lambda * ||theta - theta_base||^2, summed over the trained parameters, with
theta_base the *loaded* base weights (PIRF's public code anchors a sum of norms to the random
initialization). Offline: interpolation theta_base + alpha (theta_ft -
theta_base), alpha in [0, 1], scored on held-out samples (the EMA lives in `pirf.training.ema`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn


def online_penalty(trained: Sequence[tuple[str, nn.Parameter]], base: Mapping[str, Tensor]) -> Tensor:
    """||theta - theta_base||^2 over the trained parameters (a differentiable scalar)."""
    return sum((p - base[name].to(p.device)).pow(2).sum() for name, p in trained)


@torch.no_grad()
def interpolate(weights: Mapping[str, Tensor], base: Mapping[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """theta_base + alpha (theta - theta_base) for the entries of ``base``; the others as in ``weights``."""
    out = {}
    for name, value in weights.items():
        out[name] = base[name] + alpha * (value - base[name]) if name in base else value.clone()
    return out


__all__ = ["interpolate", "online_penalty"]
