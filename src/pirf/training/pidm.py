"""PIDM: physics-informed diffusion training (Bastek, Sun, Kochmann, ICLR 2025), the
training-based baseline PIRF is measured against.

PIRF's re-implementation (Yuan et al. 2025, arXiv 2509.20570, baselines) continues the base model's
training with the EDM loss plus the squared PDE residual of the denoised estimate, weighted by the
inverse noise level:

    L = E[lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2] + c E[ mean_p R(x0_hat)[p]^2 / (2 sigma) ],

with x0_hat = D(x0 + sigma n, sigma) mapped to physical units and read as PIRF's reward reads a
sample (`pirf.rewards.ResidualReward`: projected, the channels the reward may not move detached).
Ours takes the residual's mean over pixels where PIRF's code sums it, so c does not grow with the
resolution: c_sum = c / (H W). ``c`` is `PretrainConfig.physics_weight`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from pirf.models.denoiser import EDM_NOISE, DenoiserLike, NoiseLevels, edm_draw
from pirf.normalization import Normalization


def pidm_loss(
    denoiser: DenoiserLike,
    x0: Tensor,
    residual_mse: Callable[[Tensor], Tensor],
    normalization: Normalization,
    weight: float,
    generator=None,
    levels: NoiseLevels = EDM_NOISE,
) -> tuple[Tensor, Tensor]:
    """(total loss, physics term) of one batch (module docstring); ``residual_mse(x_phys) -> [B]``."""
    draw = edm_draw(denoiser, x0, generator, levels)
    physical = normalization.denormalize(draw.x0_hat)
    physics = (residual_mse(physical) / (2 * draw.sigma.flatten())).mean()  # R^2 / (2 sigma), PIDM
    return draw.weighted_squares.mean() + weight * physics, physics.detach()


__all__ = ["pidm_loss"]
