"""A distribution anchor on every channel: the batch's power spectrum held to the base model's.

The other anchors (`fixed_channel_drift`, `chain_anchor_drift`) compare the fine-tuned and the
base model sample by sample, and only on the channels the reward may not move. A benchmark whose
every channel enters the residual (Kolmogorov's three frames, Burgers) has none of those, and a
reward fine-tune with a wide gradient window can then lower the residual by damping the field
instead of making it consistent: on Kolmogorov a window reaching sigma = 2 over every layer took
the residual 71 -> 1.05 while the vorticity's std fell to 0.14 of the data's (docs/finetune.md).

This anchor holds a statistic of the distribution, not each sample: per channel c and integer
wavenumber shell k, the log of the batch-averaged shell power of the final samples x0 (the
model's normalized units, `shell_power`, mean not removed so shell 0 holds the mean field),
against the same statistic of the base model's samples, computed once before training,

    A(theta) = mean_{c, k} ( log P_theta(c, k) - log P_base(c, k) )^2,
    P_theta(c, k) = mean_b P[x0_b](c, k),

added to the reward loss with weight ``regularization.anchor_spectrum``. It penalizes what the
fidelity guard's spectrum and amplitude terms measure (a log-spectrum error in dex is this
quantity's square root over ln 10), so a fine-tune may rearrange each sample freely, as long as
the batch keeps the base's energy at every scale. A distribution-level pull toward the base, in
the spirit of KL-regularized reward fine-tuning (Uehara et al. 2024), matched on second moments.

With several processes each anchors its own rows' spectrum (a noisier estimate of the same
target; the gradients are averaged as usual).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pirf.evaluation.distances import shell_power
from pirf.normalization import Normalization
from pirf.sampling.draw import generate_samples

SPECTRUM_SEED = 2_000_003
"""Seed of the base samples that set the target (apart from training and held-out seeds)."""

_FLOOR = 1e-12  # relative to a channel's largest shell power: keeps log P finite on empty shells


def log_shell_power(x: Tensor) -> Tensor:
    """``[C, K]``: log of the batch-mean shell power of ``x`` ``[B, C, H, W]`` (differentiable),
    with a floor 1e-12 x the channel's largest shell so that empty shells stay finite."""
    power = shell_power(x, center=False).mean(dim=0)
    floor = _FLOOR * power.detach().amax(dim=-1, keepdim=True) + 1e-30
    return torch.log(power + floor)


def base_log_spectrum(
    base: nn.Module,
    record: dict,
    normalization: Normalization,
    steps: int,
    n: int = 64,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The target: `log_shell_power` of ``n`` samples of the frozen base model (Heun, ``steps``
    steps, seeds (`SPECTRUM_SEED`, i)), in its normalized units; float64 ``[C, K]``."""
    drawn = generate_samples(base, record, n, steps, SPECTRUM_SEED, device=device, progress=False)
    fields = torch.from_numpy(drawn.fields).to(torch.float64)
    return log_shell_power(normalization.normalize(fields)).to(device)


def spectrum_anchor(x0: Tensor, target: Tensor) -> Tensor:
    """A(theta) of the module docstring: the mean squared log-power difference (a scalar)."""
    own = log_shell_power(x0.to(torch.float64))
    return (own - target.to(own.device)).pow(2).mean().to(x0.dtype)


def in_dex(anchor: float) -> float:
    """The anchor's value as an RMS log10-spectrum difference (dex): sqrt(A) / ln 10."""
    return math.sqrt(max(anchor, 0.0)) / math.log(10.0)


__all__ = ["SPECTRUM_SEED", "base_log_spectrum", "in_dex", "log_shell_power", "spectrum_anchor"]
