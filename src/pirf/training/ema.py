"""Exponential moving average of weights with a half-life counted in training samples."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(
    batch_size: int, halflife_samples: float, seen: float | None = None, rampup: float = 0.0
) -> float:
    """Per-step decay so that a weight's influence halves every ``halflife_samples`` samples
    (EDM's ``ema_halflife_kimg`` convention): beta = 0.5 ** (batch_size / halflife).

    With ``rampup`` > 0 and ``seen`` samples trained so far, the half-life is
    min(halflife, rampup * seen) (EDM's ``ema_rampup_ratio``, Karras et al. 2022, training code):
    early in a run the average forgets the rapidly improving first weights, so a short run's EMA
    does not lag behind its own training.
    """
    if halflife_samples <= 0:
        return 0.0
    if rampup > 0 and seen is not None:
        halflife_samples = min(halflife_samples, max(rampup * seen, 1e-8))
    return 0.5 ** (batch_size / halflife_samples)


class EMA:
    """A frozen copy of a model whose parameters follow theta_ema <- beta theta_ema + (1 - beta) theta.

    Buffers are copied as they are. Starts from the model's current weights (for fine-tuning:
    from the base weights, PIRF's offline regularization).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, beta: float) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1.0 - beta)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
