"""PG-Diffusion: physics-guided diffusion (Shu, Li & Barati Farimani, "A physics-informed diffusion
model for high-fidelity flow field reconstruction", J. Comput. Phys. 478, 2023), the second
training-based baseline PIRF is measured against (Yuan et al. 2025, arXiv 2509.20570).

The denoiser also reads a physics guide, the gradient of the residual norm at its own input,

    g(x) = grad_x ||R(x')||_2,     x' = denormalize(x) read as the reward reads it,

through a learned embedding (`pirf.models.backbone.GuideEmbedding`). It is trained with EDM's loss
and guide dropout p (``guide_dropout``), one coin per batch:

    L = E[lambda(sigma) ||D(x, sigma; b g(x)) - x0||^2],   x = x0 + sigma n,   b ~ Bernoulli(1 - p),

b = 0 being the unguided call (g = 0); g is a detached input, not a path for gradients. It is
sampled by `pirf.sampling.guidance.sample_euler_pg` (Euler, the first 30% of the steps unguided).

Where ours differs from PIRF's re-implementation, and why:

- The norm is per sample, ||R(x_b')||_2 (`ResidualReward.residual_norm`), where their code takes
  one norm over the whole batch tensor. The two gradients differ by the factor
  ||R_b|| / ||R_batch|| per sample; ours makes sample b's guide a function of sample b alone, so a
  draw depends on (seed, i) only, whatever the batch size (`pirf.sampling.draw`).
- R reads the fields as PIRF's reward does (projected, the channels the reward may not move
  detached), as DPS guidance and PIDM here do: g = 0 on Darcy's coefficient channel.
- The embedding's first convolution keeps its default initialization and only the last starts at
  zero. Their code zeroes both, which leaves the guide path dead for good (docs/paper.md).
- A model warm-started from a base (``init``) keeps the fresh initialization of the U-Net's new
  input columns (`pirf.models.factory.with_guide_path`): zeroing them too would be the same
  two-zero-factor trap.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pirf.errors import ConfigError
from pirf.models.denoiser import EDM_NOISE, DenoiserLike, NoiseLevels, edm_draw
from pirf.normalization import Normalization
from pirf.pdes.base import PDE
from pirf.rewards import ResidualReward
from pirf.sampling.guidance import GuidanceLoss, loss_gradient


def guide_loss(pde: PDE, normalization: Normalization) -> GuidanceLoss:
    """||R(x')||_2 ``[B]`` of model-space fields x: the loss whose gradient is the guide."""
    reward = ResidualReward(pde)
    return lambda x: reward.residual_norm(normalization.denormalize(x))


def pg_loss(
    denoiser: DenoiserLike,
    x0: Tensor,
    loss: GuidanceLoss,
    dropout: float,
    generator: torch.Generator | None = None,
    levels: NoiseLevels = EDM_NOISE,
) -> Tensor:
    """PG-Diffusion's training loss of one batch (module docstring), a scalar. After sigma and n,
    ``generator`` draws the batch's coin: unguided with probability ``dropout``, else guided by
    g = grad_x sum_b loss(x_b) at the noisy input."""

    def guide(x: Tensor) -> Tensor | None:
        device = generator.device if generator is not None else x.device
        if bool(torch.rand((), generator=generator, device=device) < dropout):
            return None  # guide dropout: the unguided call
        return loss_gradient(loss, x)  # detached: the guide is an input

    return edm_draw(denoiser, x0, generator, levels, guide).weighted_squares.mean()


def check_pg_settings(physics_guide: bool, physics_weight: float, kind: str, has_guide: bool) -> None:
    """Refuse a PG-Diffusion run on a flow model or mixed with PIDM's loss, and a model with a
    guide path trained without it (its guide would never be read)."""
    if physics_guide and kind != "edm":
        raise ConfigError(
            f"physics_guide for a {kind} model", "PG-Diffusion applies to EDM models only: use model.kind edm"
        )
    if physics_guide and physics_weight > 0:
        raise ConfigError(
            f"physics_guide together with physics_weight = {physics_weight}",
            "run one baseline at a time: PG-Diffusion (physics_guide) or PIDM (physics_weight)",
        )
    if has_guide and not physics_guide:
        raise ConfigError(
            "the init model is a PG-Diffusion model (it reads a physics guide), but physics_guide is false",
            "set physics_guide: true to continue it, or start from a model without a guide path",
        )


__all__ = ["check_pg_settings", "guide_loss", "pg_loss"]
