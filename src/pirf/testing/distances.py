"""Comparing distributions on the test bed: sample moments, the KL divergence of two Gaussians
in closed form and a Monte Carlo KL of two Gaussian mixtures."""

from __future__ import annotations

import torch
from torch import Tensor

from pirf.errors import ShapeError
from pirf.testing.mixture import GaussianMixture


def moments(samples: Tensor) -> tuple[Tensor, Tensor]:
    """(mean ``[d]``, unbiased covariance ``[d, d]``) of samples ``[N, d]`` or ``[N, d, 1, 1]``."""
    if samples.ndim == 4 and samples.shape[2:] == (1, 1):
        samples = samples.flatten(1)
    if samples.ndim != 2 or samples.shape[0] < 2:
        raise ShapeError(
            f"moments of samples shaped {list(samples.shape)}", "pass [N >= 2, d] or [N, d, 1, 1]"
        )
    mean = samples.mean(0)
    centered = samples - mean
    return mean, centered.T @ centered / (samples.shape[0] - 1)


def gaussian_kl(mean0: Tensor, cov0: Tensor, mean1: Tensor, cov1: Tensor) -> Tensor:
    """KL(N(m0, C0) || N(m1, C1)) = 0.5 [tr(C1^{-1} C0) + (m1 - m0)^T C1^{-1} (m1 - m0) - d
    + ln det C1 - ln det C0], a 0-d tensor."""
    diff = (mean1 - mean0)[:, None]
    trace = torch.linalg.solve(cov1, cov0).diagonal().sum()
    maha = (diff * torch.linalg.solve(cov1, diff)).sum()
    logdets = torch.linalg.slogdet(cov1)[1] - torch.linalg.slogdet(cov0)[1]
    return 0.5 * (trace + maha - mean0.shape[0] + logdets)


def kl_monte_carlo(
    p: GaussianMixture, q: GaussianMixture, n: int = 100_000, generator: torch.Generator | None = None
) -> Tensor:
    """KL(p || q) ~ mean of log p(x) - log q(x) over n draws x ~ p (standard error ~ 1 / sqrt(n))."""
    x = p.sample(n, generator)
    return (p.log_prob(x) - q.log_prob(x)).mean()


__all__ = ["gaussian_kl", "kl_monte_carlo", "moments"]
