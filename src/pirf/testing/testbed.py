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

Pieces: the mixtures (`pirf.testing.mixture`), the rewards with a closed-form optimum
(`pirf.testing.rewards`), distances between distributions (`pirf.testing.distances`) and a
fine-tune with the loop's own pieces (`pirf.testing.finetuning`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from pirf.errors import ConfigError, ShapeError
from pirf.models.denoiser import Denoiser, FlowDenoiser, edm_loss, flow_matching_loss
from pirf.testing.mixture import GaussianMixture
from pirf.training.schedule import learning_rate, set_learning_rate
from pirf.training.steps import guarded_step

Parametrization = Literal["edm", "flow"]

FLOW_T_MAX = 1 - 1e-6
"""`MixtureBackbone` clamps flow times to [0, FLOW_T_MAX]: t = 1 is sigma = inf."""


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
    the loss's noise. ``cosine`` anneals the learning rate from ``lr`` to 0 over ``steps``,
    lr(s) = lr (1 + cos(pi s / steps)) / 2 (`pirf.training.schedule.learning_rate`, the fine-tune's
    cosine without warm-up), which removes most of Adam's end-of-run jitter. Each step is the
    training loops' guarded step (a non-finite loss or gradient moves nothing). Works for any pirf
    model on ``[B, d, 1, 1]`` fields, not only testbed ones.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    data_gen = torch.Generator(device=data.means.device).manual_seed(seed)
    loss_gen = torch.Generator(device=params[0].device).manual_seed(seed + 1)
    optimizer = torch.optim.Adam(params, lr=lr)
    loss_fn = flow_matching_loss if isinstance(model, FlowDenoiser) else edm_loss
    schedule = "cosine" if cosine else "constant"
    history = []
    for step in range(steps):
        set_learning_rate(optimizer, learning_rate(step, lr=lr, schedule=schedule, decay_end=steps))
        x0 = data.sample(batch_size, data_gen).to(dtype=params[0].dtype, device=params[0].device)
        loss = loss_fn(model, x0[:, :, None, None], loss_gen)
        guarded_step(optimizer, params, loss, clip=0.0, measure_norm=False)
        history.append(loss.item())
    return history


__all__ = ["FLOW_T_MAX", "MixtureBackbone", "Parametrization", "testbed_model", "train_testbed_base"]
