"""Rewards of the test bed whose KL-regularized optimum is again a Gaussian mixture in closed
form: linear r(x) = w . x and quadratic r(x) = -(k/2) ||x - c||^2 (`pirf.testing.testbed`)."""

from __future__ import annotations

import torch
from torch import Tensor

from pirf.rewards import Reward
from pirf.testing.mixture import GaussianMixture, as_points


class LinearReward(Reward):
    """r(x) = w . x on fields ``[B, d, 1, 1]`` (or points ``[B, d]``); optimum `tilt_linear`."""

    def __init__(self, w: Tensor) -> None:
        self.w = torch.as_tensor(w)

    def __call__(self, x: Tensor) -> Tensor:
        return as_points(x, self.w.shape[0], "LinearReward") @ self.w.to(dtype=x.dtype, device=x.device)

    def optimum(self, reference: GaussianMixture, alpha: float) -> GaussianMixture:
        """reference(x) exp(r(x) / alpha) / Z."""
        return reference.tilt_linear(self.w, alpha)

    def describe(self) -> dict:
        return {"type": "testbed-linear", "w": self.w.tolist()}


class QuadraticReward(Reward):
    """r(x) = -(k/2) ||x - center||^2 on fields ``[B, d, 1, 1]``; optimum `tilt_quadratic`."""

    def __init__(self, center: Tensor, k: float = 1.0) -> None:
        self.center, self.k = torch.as_tensor(center), float(k)

    def __call__(self, x: Tensor) -> Tensor:
        x = as_points(x, self.center.shape[0], "QuadraticReward")
        return -0.5 * self.k * (x - self.center.to(dtype=x.dtype, device=x.device)).square().sum(-1)

    def optimum(self, reference: GaussianMixture, alpha: float) -> GaussianMixture:
        """reference(x) exp(r(x) / alpha) / Z."""
        return reference.tilt_quadratic(self.center, self.k, alpha)

    def describe(self) -> dict:
        return {"type": "testbed-quadratic", "center": self.center.tolist(), "k": self.k}


__all__ = ["LinearReward", "QuadraticReward"]
