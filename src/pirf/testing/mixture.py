"""Gaussian mixtures in closed form for the test bed (`pirf.testing.testbed`): sampling,
moments, the noised marginals p_sigma = p * N(0, sigma^2 I), their score and exact denoiser
(`GaussianMixture.posterior_mean`), and the KL-regularized optima p exp(r / alpha) / Z of a
linear or quadratic reward (`GaussianMixture.tilt_linear`, `GaussianMixture.tilt_quadratic`).

Points are ``[B, d]``; fields ``[B, d, 1, 1]`` are accepted where points are (`as_points`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pirf.errors import ConfigError, ShapeError


def _sigma_vector(sigma: float | Tensor, x: Tensor) -> Tensor:
    """sigma as a ``[B]`` (or ``[1]``, shared) tensor in x's dtype and device."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
    if sigma.shape[0] not in (1, x.shape[0]):
        raise ShapeError(
            f"sigma of shape {list(sigma.shape)} for a batch of {x.shape[0]} points",
            f"pass one sigma (a float) or one per point, shape [{x.shape[0]}]",
        )
    return sigma


def as_points(x: Tensor, d: int, who: str) -> Tensor:
    """Points ``[B, d]`` from ``[B, d]`` or fields ``[B, d, 1, 1]``."""
    if x.ndim == 4 and x.shape[2:] == (1, 1):
        x = x.flatten(1)
    if x.ndim != 2 or x.shape[1] != d:
        raise ShapeError(
            f"{who}: expected points [B, {d}] or fields [B, {d}, 1, 1], got {list(x.shape)}",
            f"pass a batch of {d}-dimensional points",
        )
    return x


@dataclass
class _Pieces:
    """A mixture's per-component pieces at points x and noise level sigma (S_k = Sigma_k + sigma^2 I)."""

    x: Tensor  # [B, d]
    mix: GaussianMixture  # in x's dtype and device
    sigma: Tensor  # [B] or [1]
    log_w: Tensor  # [B, K], log responsibilities, log-softmax of log_joint
    log_joint: Tensor  # [B, K], log pi_k + log N(x; mu_k, S_k)
    u: Tensor  # [B, K, d], S_k^{-1} (x - mu_k)


@dataclass
class GaussianMixture:
    """p(x) = sum_k pi_k N(x; mu_k, Sigma_k) in d dimensions.

    ``weights [K]`` (positive, summing to 1), ``means [K, d]``, ``covs [K, d, d]`` (symmetric
    positive definite). Plain tensors: build one from parameters and gradients flow through
    every method.
    """

    weights: Tensor
    means: Tensor
    covs: Tensor

    def __post_init__(self) -> None:
        k, d = self.means.shape if self.means.ndim == 2 else (-1, -1)
        if self.weights.shape != (k,) or self.covs.shape != (k, d, d):
            raise ShapeError(
                f"mixture with weights {list(self.weights.shape)}, means {list(self.means.shape)}, "
                f"covs {list(self.covs.shape)}",
                "give weights [K], means [K, d], covs [K, d, d]",
            )

    # ------------------------------------------------------------------------------------------
    # constructors

    @classmethod
    def gaussian(cls, mean: Tensor, cov: Tensor) -> GaussianMixture:
        """The single Gaussian N(mean, cov), ``mean [d]``, ``cov [d, d]``."""
        mean = torch.as_tensor(mean)
        cov = torch.as_tensor(cov, dtype=mean.dtype, device=mean.device)
        return cls(mean.new_ones(1), mean[None], cov[None])

    @classmethod
    def two_modes(
        cls, d: int, separation: float, std: float, dtype: torch.dtype = torch.float64
    ) -> GaussianMixture:
        """0.5 N(-s/2 e_1, std^2 I) + 0.5 N(+s/2 e_1, std^2 I), s = ``separation``."""
        means = torch.zeros(2, d, dtype=dtype)
        means[:, 0] = torch.tensor([-separation / 2, separation / 2], dtype=dtype)
        covs = (std**2 * torch.eye(d, dtype=dtype)).expand(2, d, d).clone()
        return cls(torch.full((2,), 0.5, dtype=dtype), means, covs)

    # ------------------------------------------------------------------------------------------
    # basics

    @property
    def dim(self) -> int:
        """d, the dimension of a point."""
        return self.means.shape[1]

    @property
    def components(self) -> int:
        """K, the number of components."""
        return self.means.shape[0]

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> GaussianMixture:
        """The same mixture in another dtype / on another device (differentiable)."""
        return GaussianMixture(
            self.weights.to(dtype=dtype, device=device),
            self.means.to(dtype=dtype, device=device),
            self.covs.to(dtype=dtype, device=device),
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws ``[n, d]``: k ~ Categorical(pi), x = mu_k + L_k z, L_k L_k^T = Sigma_k, z ~ N(0, I).

        ``generator`` must live on the mixture's device. Not differentiable in the weights.
        """
        kw = {"generator": generator, "dtype": self.means.dtype, "device": self.means.device}
        k = torch.multinomial(self.weights.detach(), n, replacement=True, generator=generator)
        z = torch.randn((n, self.dim), **kw)
        chol = torch.linalg.cholesky(self.covs)
        return self.means[k] + (chol[k] @ z[:, :, None])[:, :, 0]

    def mean(self) -> Tensor:
        """E[x] = sum_k pi_k mu_k, ``[d]``."""
        return self.weights @ self.means

    def cov(self) -> Tensor:
        """Cov[x] = sum_k pi_k (Sigma_k + mu_k mu_k^T) - m m^T, ``[d, d]``."""
        m = self.mean()
        second = torch.einsum(
            "k,kij->ij", self.weights, self.covs + self.means[:, :, None] * self.means[:, None]
        )
        return second - m[:, None] * m[None]

    # ------------------------------------------------------------------------------------------
    # the noised marginals and the denoiser

    def _components_at(self, x: Tensor, sigma: float | Tensor) -> _Pieces:
        """Per-component pieces at noise level sigma, S_k = Sigma_k + sigma^2 I (see `_Pieces`);
        u_k comes from two triangular solves with the Cholesky factor of S_k."""
        x = as_points(x, self.dim, "GaussianMixture")
        mix = self.to(x.dtype, x.device)
        sigma = _sigma_vector(sigma, x)
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        s = mix.covs[None] + (sigma**2)[:, None, None, None] * eye  # [B or 1, K, d, d]
        chol = torch.linalg.cholesky(s)
        diff = (x[:, None, :] - mix.means[None])[..., None]  # [B, K, d, 1]
        z = torch.linalg.solve_triangular(chol, diff, upper=False)
        u = torch.linalg.solve_triangular(chol.transpose(-1, -2), z, upper=True)[..., 0]
        logdet = 2 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)  # [B or 1, K]
        log_joint = mix.weights.log() - 0.5 * (
            z[..., 0].square().sum(-1) + logdet + self.dim * math.log(2 * math.pi)
        )
        return _Pieces(x, mix, sigma, torch.log_softmax(log_joint, dim=-1), log_joint, u)

    def log_prob(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """log p_sigma(x) = logsumexp_k [log pi_k + log N(x; mu_k, Sigma_k + sigma^2 I)], ``[B]``.

        x is ``[B, d]`` or ``[B, d, 1, 1]``; sigma = 0 (default) is the mixture itself.
        """
        return self._components_at(x, sigma).log_joint.logsumexp(-1)

    def score(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """grad_x log p_sigma(x) = -sum_k w_k(x) (Sigma_k + sigma^2 I)^{-1} (x - mu_k), ``[B, d]``."""
        at = self._components_at(x, sigma)
        return -(at.log_w.exp()[..., None] * at.u).sum(1)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> tuple[Tensor, Tensor]:
        """(E[x0 | x], E[n | x]) for x = x0 + sigma n, x0 ~ p, n ~ N(0, I); both ``[B, d]``.

        With responsibilities w_k(x) ∝ pi_k N(x; mu_k, Sigma_k + sigma^2 I) and
        u_k = (Sigma_k + sigma^2 I)^{-1} (x - mu_k) (Gaussian conditioning per component):

            E[x0 | x] = sum_k w_k (mu_k + Sigma_k u_k),      E[n | x] = sigma sum_k w_k u_k.

        Both forms are free of cancellation at small and at large sigma (unlike x + sigma^2 score
        or (x - x0_hat) / sigma), so the model wrappers built on them are exact to round-off.
        At sigma = 0, E[x0 | x] = x exactly and E[n | x] = 0.
        """
        at = self._components_at(x, sigma)
        w = at.log_w.exp()[..., None]  # [B, K, 1]
        x0_k = at.mix.means + (at.mix.covs @ at.u[..., None])[..., 0]  # [B, K, d]
        x0_hat = torch.where(at.sigma[:, None] == 0, at.x, (w * x0_k).sum(1))
        eps_hat = at.sigma[:, None] * (w * at.u).sum(1)
        return x0_hat, eps_hat

    def posterior_mean(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """The exact denoiser D(x, sigma) = E[x0 | x0 + sigma n = x], ``[B, d]`` (see `denoise`).

        sigma -> 0 gives x (exactly x at sigma = 0); sigma -> inf gives the mixture mean.
        """
        return self.denoise(x, sigma)[0]

    # ------------------------------------------------------------------------------------------
    # the KL-regularized optima p exp(r / alpha) / Z

    def tilt_linear(self, w: Tensor, alpha: float) -> GaussianMixture:
        """p(x) exp(w . x / alpha) / Z for ``w [d]``, alpha > 0, again a mixture:

        mu_k' = mu_k + Sigma_k w / alpha,   Sigma_k' = Sigma_k,
        pi_k' ∝ pi_k exp(w . mu_k / alpha + w^T Sigma_k w / (2 alpha^2)).
        """
        _check_alpha(alpha)
        w = torch.as_tensor(w, dtype=self.means.dtype, device=self.means.device)
        sw = self.covs @ w / alpha  # [K, d]
        log_pi = self.weights.log() + self.means @ w / alpha + 0.5 * (sw @ w) / alpha
        return GaussianMixture(torch.softmax(log_pi, 0), self.means + sw, self.covs)

    def tilt_quadratic(self, center: Tensor, k: float, alpha: float) -> GaussianMixture:
        """p(x) exp(r(x) / alpha) / Z for r(x) = -(k/2) ||x - c||^2, k > 0, alpha > 0.

        exp(r / alpha) is, up to a constant, a Gaussian likelihood of an observation c of x with
        covariance (alpha / k) I, so with A_k = Sigma_k + (alpha / k) I (Gaussian conditioning):

            Sigma_k' = (Sigma_k^{-1} + (k / alpha) I)^{-1} = (alpha / k) Sigma_k A_k^{-1},
            mu_k'    = mu_k + Sigma_k A_k^{-1} (c - mu_k),
            pi_k'   ∝ pi_k N(c; mu_k, A_k)

        (pi_k' ∝ pi_k ∫ N(x; mu_k, Sigma_k) exp(r(x) / alpha) dx
              = pi_k N(c; mu_k, A_k) (2 pi alpha / k)^{d/2}, the constant cancels).
        """
        _check_alpha(alpha)
        if not k > 0:
            raise ConfigError(f"tilt_quadratic: k = {k}", "use a curvature k > 0 (r = -(k/2)||x - c||^2)")
        center = torch.as_tensor(center, dtype=self.means.dtype, device=self.means.device)
        eye = torch.eye(self.dim, dtype=self.means.dtype, device=self.means.device)
        a = self.covs + (alpha / k) * eye
        # Sigma A^{-1} = (A^{-1} Sigma)^T, and Sigma, A commute
        gain = torch.linalg.solve(a, self.covs).transpose(-1, -2)  # [K, d, d]
        covs = (alpha / k) * gain
        covs = 0.5 * (covs + covs.transpose(-1, -2))
        means = self.means + (gain @ (center - self.means)[..., None])[..., 0]
        log_pi = self.weights.log() + _log_normal(center, self.means, a)
        return GaussianMixture(torch.softmax(log_pi, 0), means, covs)


def _log_normal(x: Tensor, means: Tensor, covs: Tensor) -> Tensor:
    """log N(x; mu_k, C_k) for one point ``x [d]`` and every component, ``[K]``."""
    chol = torch.linalg.cholesky(covs)
    z = torch.linalg.solve_triangular(chol, (x - means)[..., None], upper=False)[..., 0]
    logdet = 2 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * (z.square().sum(-1) + logdet + means.shape[1] * math.log(2 * math.pi))


def _check_alpha(alpha: float) -> None:
    if not alpha > 0:
        raise ConfigError(f"KL weight alpha = {alpha}", "use alpha > 0 (p* ∝ p_ref exp(r / alpha))")


__all__ = ["GaussianMixture", "as_points"]
