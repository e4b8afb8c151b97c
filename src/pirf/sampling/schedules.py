"""Noise-level grids for the samplers, kept apart from the samplers (k-diffusion's split).

Every grid is a decreasing 1-D tensor ``sigmas[0] > sigmas[1] > ... > sigmas[N] >= 0`` of N + 1
noise levels in the EDM convention x = x0 + sigma * eps; N steps take the state from
``sigmas[0]`` to ``sigmas[N]`` (usually 0, a clean sample).

A rectified-flow time t in [0, 1) (x_t = (1 - t) x0 + t eps) is the same state rescaled:
x_t = x / (1 + sigma) with sigma = t / (1 - t). `flow_sigmas` writes a uniform t grid in sigma.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pirf.errors import ConfigError
from pirf.models.denoiser import sigma_to_t, t_to_sigma  # the flow <-> EDM time map lives with the models


def karras_sigmas(
    n: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """The EDM time steps (Karras et al. 2022, eq. 5) with sigma_N = 0 appended. Shape ``[n + 1]``.

        sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
        i = 0 .. n - 1,   sigma_n = 0.

    ``n`` is the number of sampler steps (Heun makes 2n - 1 network calls). Good values:
    sigma_min = 0.002, sigma_max = 80, rho = 7 (EDM and PIRF); n = 20 to 80. With n = 1 the grid
    is [sigma_max, 0].
    """
    if n < 1:
        raise ConfigError(f"karras_sigmas: n = {n} steps", "use n >= 1")
    if not 0 < sigma_min < sigma_max:
        raise ConfigError(
            f"karras_sigmas: sigma_min = {sigma_min}, sigma_max = {sigma_max}",
            "use 0 < sigma_min < sigma_max (EDM: 0.002 and 80)",
        )
    if rho <= 0:
        raise ConfigError(f"karras_sigmas: rho = {rho}", "use rho > 0 (EDM: 7)")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho  # EDM eq. 5
    sigmas[0] = sigma_max  # exact end points, free of round-off
    if n > 1:
        sigmas[-1] = sigma_min
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(dtype=dtype, device=device)


def flow_sigmas(
    n: int,
    t_max: float = 80 / 81,
    t_min: float = 0.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """A uniform rectified-flow time grid t_max -> t_min in n steps, as sigmas. Shape ``[n + 1]``.

        t_i = t_max + i / n (t_min - t_max),   sigma_i = t_i / (1 - t_i).

    t = 1 (pure noise) is sigma = inf and cannot be written; ``t_max`` < 1 stands in for it, as
    sigma_max does in EDM (the default 80/81 is sigma_max = 80; the chain starts from
    x_t = t_max * noise, dropping the (1 - t_max) x0 term). With t_min = 0 the grid ends at
    sigma = 0. The Flow-GRPO SDE needs 1 - t_max > a^2 / (2n) (see `sample_flow_sde`).
    Euler in sigma on this grid is exactly the flow-ODE Euler step in t (see
    `pirf.sampling.samplers`), so no separate flow Euler sampler is needed.
    """
    if n < 1:
        raise ConfigError(f"flow_sigmas: n = {n} steps", "use n >= 1")
    if not 0 <= t_min < t_max < 1:
        raise ConfigError(
            f"flow_sigmas: t_min = {t_min}, t_max = {t_max}", "use 0 <= t_min < t_max < 1 (e.g. 0 and 80/81)"
        )
    t = torch.linspace(t_max, t_min, n + 1, dtype=torch.float64)
    return t_to_sigma(t).to(dtype=dtype, device=device)


__all__ = ["flow_sigmas", "karras_sigmas", "sigma_to_t", "t_to_sigma"]
