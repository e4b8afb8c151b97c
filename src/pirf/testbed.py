"""An exact test bed for reward fine-tuning: Gaussian-mixture models whose optimum is known.

Reward fine-tuning with a KL penalty,

    max_p  E_{x ~ p}[r(x)] - alpha KL(p || p_ref),

has the closed-form optimum (Uehara et al. 2024, "Understanding Reinforcement Learning-Based
Fine-Tuning of Diffusion Models: A Tutorial and Review", Sec. 3, the target distribution of
KL-regularized fine-tuning)

    p*(x) = p_ref(x) exp(r(x) / alpha) / Z,      Z = E_{p_ref}[exp(r / alpha)].

On real fields p* is out of reach; here it is exact. The test bed is a low-dimensional world
(d = 1 or 2) laid out as pirf fields ``[B, d, 1, 1]`` (channels = d, resolution = 1) where:

- the data / reference distribution is a Gaussian mixture (`GaussianMixture`), whose noised
  marginals p_sigma = p * N(0, sigma^2 I) and denoiser D(x, sigma) = E[x0 | x0 + sigma n = x]
  are closed-form (`GaussianMixture.posterior_mean`);
- for a linear reward r(x) = w . x or a quadratic one r(x) = -(k/2) ||x - c||^2, the optimum
  p_ref exp(r / alpha) / Z is again a Gaussian mixture (`GaussianMixture.tilt_linear`,
  `GaussianMixture.tilt_quadratic`; rewards `LinearReward`, `QuadraticReward`);
- the model is a *learnable* Gaussian mixture (`MixtureBackbone`) behind pirf's own wrappers
  (`Denoiser` for EDM, `FlowDenoiser` for rectified flow), so that the wrapped model's
  D(x, sigma) is exactly the posterior mean of its current mixture. It trains with pirf's own
  losses (`train_testbed_base`), samples with pirf's samplers, and a fine-tuning method run on
  it can be compared with p* in closed form (moments, `gaussian_kl`, `kl_monte_carlo`).

Conventions: the mixture's tensors carry the dtype (float64 recommended; every method works in
the dtype of its inputs); points are ``[B, d]`` in `GaussianMixture`, fields ``[B, d, 1, 1]``
for models, samplers and rewards; sigma is a float, a 0-d tensor or one value per point ``[B]``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from pirf.errors import ConfigError, ShapeError
from pirf.finetune.config import FinetuneConfig
from pirf.finetune.loop import optimizer_step, seeded_rollout
from pirf.finetune.registry import make_method, refuse_black_box
from pirf.models.denoiser import Denoiser, FlowDenoiser, edm_loss, flow_matching_loss
from pirf.normalization import Normalization
from pirf.rewards import Reward
from pirf.sampling import karras_sigmas

Parametrization = Literal["edm", "flow"]

FLOW_T_MAX = 1 - 1e-6
"""`MixtureBackbone` clamps flow times to [0, FLOW_T_MAX]: t = 1 is sigma = inf."""


def _sigma_vector(sigma: float | Tensor, x: Tensor) -> Tensor:
    """sigma as a ``[B]`` (or ``[1]``, shared) tensor in x's dtype and device."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
    if sigma.shape[0] not in (1, x.shape[0]):
        raise ShapeError(
            f"sigma of shape {list(sigma.shape)} for a batch of {x.shape[0]} points",
            f"pass one sigma (a float) or one per point, shape [{x.shape[0]}]",
        )
    return sigma


def _points(x: Tensor, d: int, who: str) -> Tensor:
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
        x = _points(x, self.dim, "GaussianMixture")
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


# ----------------------------------------------------------------------------------------------
# the learnable mixture behind pirf's wrappers


class MixtureBackbone(nn.Module):
    """A learnable K-component Gaussian mixture in d dimensions, as a pirf backbone.

    Parameters: ``logits [K]`` (pi = softmax(logits)), ``means [K, d]``, and the Cholesky
    factor L_k of Sigma_k = L_k L_k^T stored as ``log_diag [K, d]`` (log of its positive
    diagonal) and ``lower [K, d (d - 1) / 2]`` (its strict lower triangle, unconstrained, in
    `torch.tril_indices` order).

    ``forward(x_in [B, d, 1, 1], c [B])`` returns what the wrapper needs for the wrapped model
    to be exactly the mixture's denoiser, D(x, sigma) = ``distribution().posterior_mean(x, sigma)``.
    With (x0_hat, eps_hat) = `GaussianMixture.denoise` (x, sigma):

    - "edm", behind ``Denoiser(backbone, sigma_data)``: c = ln(sigma) / 4, x_in = x / r with
      r = sqrt(sigma^2 + sd^2), and the backbone returns EDM's F target

          F = (x0_hat - c_skip x) / c_out = sigma / (sd r) x0_hat - (sd / r) eps_hat;

    - "flow", behind ``FlowDenoiser(backbone, sigma_data)``: c = t, x_in = x_t, sigma = t / (1 - t),
      x = (1 + sigma) x_t, and the backbone returns the velocity

          v = E[eps - x0 | x_t] = eps_hat - x0_hat   (= (x_t - x0_hat) / t).

    Neither form divides by a small number (t is only clamped below ``FLOW_T_MAX``), so the
    wrapped models match the closed form to round-off at every sigma, including 0.
    ``sigma_data`` must be the wrapper's (`testbed_model` sets both).
    """

    def __init__(
        self,
        d: int,
        components: int = 1,
        parametrization: Parametrization = "edm",
        sigma_data: float = 0.5,
        *,
        generator: torch.Generator | None = None,
        init_scale: float = 1.0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        """Random init: means ~ init_scale N(0, I), identity covariances, equal weights."""
        super().__init__()
        if parametrization not in ("edm", "flow"):
            raise ConfigError(f"parametrization {parametrization!r}", "use 'edm' or 'flow'")
        if d < 1 or components < 1:
            raise ConfigError(
                f"MixtureBackbone(d={d}, components={components})", "use d >= 1, components >= 1"
            )
        if not sigma_data > 0:
            raise ConfigError(f"sigma_data = {sigma_data}", "use sigma_data > 0")
        self.channels, self.resolution = d, 1
        self.parametrization: Parametrization = parametrization
        self.sigma_data = float(sigma_data)
        means = init_scale * torch.randn((components, d), generator=generator, dtype=torch.float64)
        self.logits = nn.Parameter(torch.zeros(components, dtype=dtype))
        self.means = nn.Parameter(means.to(dtype))
        self.log_diag = nn.Parameter(torch.zeros(components, d, dtype=dtype))
        self.lower = nn.Parameter(torch.zeros(components, d * (d - 1) // 2, dtype=dtype))

    @classmethod
    def from_mixture(
        cls, mix: GaussianMixture, parametrization: Parametrization = "edm", sigma_data: float = 0.5
    ) -> MixtureBackbone:
        """A backbone whose `distribution` is ``mix`` (in mix's dtype and device)."""
        backbone = cls(mix.dim, mix.components, parametrization, sigma_data, dtype=mix.means.dtype)
        chol = torch.linalg.cholesky(mix.covs)
        rows, cols = torch.tril_indices(mix.dim, mix.dim, offset=-1)
        with torch.no_grad():
            backbone.logits.copy_(mix.weights.log())
            backbone.means.copy_(mix.means)
            backbone.log_diag.copy_(torch.diagonal(chol, dim1=-2, dim2=-1).log())
            backbone.lower.copy_(chol[:, rows, cols])
        return backbone.to(mix.means.device)

    def cholesky(self) -> Tensor:
        """L_k ``[K, d, d]``, lower triangular with positive diagonal."""
        d = self.channels
        chol = torch.diag_embed(self.log_diag.exp())
        rows, cols = torch.tril_indices(d, d, offset=-1, device=chol.device)
        k = torch.arange(chol.shape[0], device=chol.device)[:, None]
        return chol.index_put((k, rows[None], cols[None]), self.lower)

    def distribution(self) -> GaussianMixture:
        """The current mixture (pi = softmax(logits), mu, Sigma = L L^T), differentiable."""
        chol = self.cholesky()
        return GaussianMixture(torch.softmax(self.logits, 0), self.means, chol @ chol.transpose(-1, -2))

    def forward(self, x_in: Tensor, c: Tensor) -> Tensor:
        """F (edm) or v (flow) ``[B, d, 1, 1]`` for x_in ``[B, d, 1, 1]``, c ``[B]`` (class docstring)."""
        if x_in.ndim != 4 or x_in.shape[1:] != (self.channels, 1, 1):
            raise ShapeError(
                f"MixtureBackbone: input of shape {list(x_in.shape)}",
                f"pass fields [B, {self.channels}, 1, 1]",
            )
        batch = x_in.shape[0]
        c = torch.as_tensor(c, dtype=x_in.dtype, device=x_in.device).reshape(-1).expand(batch)
        mix = self.distribution().to(x_in.dtype, x_in.device)
        if self.parametrization == "edm":
            sd = self.sigma_data
            sigma = (4 * c).exp()
            r = (sigma**2 + sd**2).sqrt()[:, None]
            x0_hat, eps_hat = mix.denoise(x_in.flatten(1) * r, sigma)
            out = sigma[:, None] / (sd * r) * x0_hat - (sd / r) * eps_hat
        else:
            t = c.clamp(0, FLOW_T_MAX)
            sigma = t / (1 - t)
            x0_hat, eps_hat = mix.denoise(x_in.flatten(1) * (1 + sigma[:, None]), sigma)
            out = eps_hat - x0_hat
        return out.reshape(batch, self.channels, 1, 1)


def testbed_model(
    kind: Parametrization,
    mixture_or_components: GaussianMixture | int,
    sigma_data: float = 0.5,
    *,
    dim: int | None = None,
    generator: torch.Generator | None = None,
    init_scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> Denoiser | FlowDenoiser:
    """A pirf model (``Denoiser`` for "edm", ``FlowDenoiser`` for "flow") around a `MixtureBackbone`.

    ``mixture_or_components``: a `GaussianMixture` to start from (its dtype), or a number of
    components K for a random init in ``dim`` dimensions (``generator``, ``init_scale``, ``dtype``).
    The wrapped model's D(x, sigma) is exactly ``model.backbone.distribution().posterior_mean``.
    """
    if kind not in ("edm", "flow"):
        raise ConfigError(f"testbed_model kind {kind!r}", "use 'edm' or 'flow'")
    if isinstance(mixture_or_components, GaussianMixture):
        backbone = MixtureBackbone.from_mixture(mixture_or_components, kind, sigma_data)
    else:
        if dim is None:
            raise ConfigError("testbed_model: a component count without dim", "pass dim=1 or dim=2")
        backbone = MixtureBackbone(
            dim,
            int(mixture_or_components),
            kind,
            sigma_data,
            generator=generator,
            init_scale=init_scale,
            dtype=dtype,
        )
    wrapper = Denoiser if kind == "edm" else FlowDenoiser
    return wrapper(backbone, sigma_data)


testbed_model.__test__ = False  # type: ignore[attr-defined]  # pytest: not a test despite the name


def train_testbed_base(
    model: Denoiser | FlowDenoiser,
    data: GaussianMixture,
    *,
    steps: int = 400,
    batch_size: int = 1024,
    lr: float = 0.05,
    seed: int = 0,
    cosine: bool = True,
) -> list[float]:
    """Fit ``model`` to draws of ``data`` with pirf's own loss and Adam; the loss per step.

    A fresh batch of ``batch_size`` draws every step; `edm_loss` for a ``Denoiser``,
    `flow_matching_loss` (uniform t) for a ``FlowDenoiser``. ``seed`` fixes the data draws and
    the loss's noise. ``cosine`` anneals the learning rate from ``lr`` to 0 over ``steps``
    (cosine), which removes most of Adam's end-of-run jitter. Works for any pirf model on
    ``[B, d, 1, 1]`` fields, not only testbed ones.
    """
    param = next(model.parameters())
    data_gen = torch.Generator(device=data.means.device).manual_seed(seed)
    loss_gen = torch.Generator(device=param.device).manual_seed(seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if cosine else None
    loss_fn = flow_matching_loss if isinstance(model, FlowDenoiser) else edm_loss
    history = []
    for _ in range(steps):
        x0 = data.sample(batch_size, data_gen).to(dtype=param.dtype, device=param.device)
        loss = loss_fn(model, x0[:, :, None, None], loss_gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        history.append(loss.item())
    return history


# ----------------------------------------------------------------------------------------------
# rewards with a closed-form optimum


class LinearReward(Reward):
    """r(x) = w . x on fields ``[B, d, 1, 1]`` (or points ``[B, d]``); optimum `tilt_linear`."""

    def __init__(self, w: Tensor) -> None:
        self.w = torch.as_tensor(w)

    def __call__(self, x: Tensor) -> Tensor:
        return _points(x, self.w.shape[0], "LinearReward") @ self.w.to(dtype=x.dtype, device=x.device)

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
        x = _points(x, self.center.shape[0], "QuadraticReward")
        return -0.5 * self.k * (x - self.center.to(dtype=x.dtype, device=x.device)).square().sum(-1)

    def optimum(self, reference: GaussianMixture, alpha: float) -> GaussianMixture:
        """reference(x) exp(r(x) / alpha) / Z."""
        return reference.tilt_quadratic(self.center, self.k, alpha)

    def describe(self) -> dict:
        return {"type": "testbed-quadratic", "center": self.center.tolist(), "k": self.k}


# ----------------------------------------------------------------------------------------------
# comparing distributions


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


# ----------------------------------------------------------------------------------------------
# fine-tuning on the test bed with the loop's own pieces


def finetune_testbed(
    model: Denoiser | FlowDenoiser, cfg: FinetuneConfig, reward: Reward
) -> list[dict[str, float]]:
    """Fine-tune a test-bed ``model`` in place with the method ``cfg.method`` names, with the
    fine-tuning loop's own pieces (`make_method`, `seeded_rollout`, `optimizer_step`), against
    the frozen copy it starts as. Every parameter trains; no EMA, evaluation or checkpoints (the
    loop's parts that need a PDE). Uses ``cfg``'s method, iterations, batch_size, lr, grad_clip,
    seed, loss, sampler, policy and regression. Returns per iteration the mean reward of the
    rollouts and the last loss."""
    kind = "flow" if isinstance(model, FlowDenoiser) else "edm"
    method = make_method(cfg, kind, model.sigma_data)
    if method.needs_differentiable_reward and not reward.differentiable:
        refuse_black_box(method)
    params = [p for p in model.parameters() if p.requires_grad]
    dtype = params[0].dtype
    reference = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    s = cfg.sampler
    sigmas = karras_sigmas(s.steps, s.sigma_min, s.sigma_max, s.rho).to(dtype)
    history = []
    for iteration in range(cfg.iterations):
        rollout = seeded_rollout(
            cfg.seed,
            iteration,
            list(range(cfg.batch_size)),
            method.group_size,
            (model.channels, 1, 1),
            dtype=dtype,
            denoiser=model,
            sigmas=sigmas,
            reward=reward,
            normalization=Normalization.identity(model.channels),
            reference=reference,
            model=model,
        )
        for update in method.updates(rollout):
            loss, logs = update
            optimizer_step(optimizer, params, loss, cfg.grad_clip)
        history.append({"reward": -float(logs["residual_mse"].mean()), "loss": float(loss.detach())})
    return history


__all__ = [
    "FLOW_T_MAX",
    "GaussianMixture",
    "LinearReward",
    "MixtureBackbone",
    "QuadraticReward",
    "finetune_testbed",
    "gaussian_kl",
    "kl_monte_carlo",
    "moments",
    "testbed_model",
    "train_testbed_base",
]
