"""Methods that regress the model onto a target built from rewards: reward-weighted regression,
reward score matching and adjoint matching. All three aim at the KL-regularized optimum

    p*(x) = p_base(x) exp(f(x) / alpha) / Z

(Uehara et al. 2024, "Understanding Reinforcement Learning-Based Fine-Tuning of Diffusion
Models: A Tutorial and Review", Sec. 4), f the objective the ``loss`` setting names (`objective`).
In denoiser units the score is s(x, sigma) = (D(x, sigma) - x) / sigma^2, so the score of p*'s
noised marginals is that of the base plus grad_x v(x, sigma) / alpha, v the value
alpha log E_base[exp(f(x0) / alpha) | x]; a target score is a target denoiser

    D*(x, sigma) = D_base(x, sigma) + sigma^2 grad_x v(x, sigma) / alpha.

Reward-weighted regression (RWR; Peters & Schaal 2007; Lee et al. 2023 for diffusion): the model's
own training loss on samples weighted by w_b = softmax_b(f_b / alpha) * B (self-normalized).
Samples of the frozen base make the weighted data p_base exp(f / alpha) exactly; samples of the
current model tilt again each round (reward maximization at a rate set by alpha).

Reward score matching (RSM; Lee, Kim, Chang, Ye): regress D onto D_base + sigma^2 gamma(sigma)
Psi_hat with an estimate Psi_hat of grad v / alpha, with the EDM weight lambda(sigma) =
(sigma^2 + sd^2) / (sigma sd)^2 and a trust region C2 ||D - D_old||^2:

    tweedie   Psi = grad_{x_t} f(D_base(x_t)) / alpha    (through the denoiser; exact for a linear f
                                                          on a Gaussian base),
    denoised  Psi = (grad f)(D_base(x_t)) / alpha        (no Jacobian; gamma = snr stands in for it),
    terminal  Psi = (grad f)(x0) / alpha                  (the trajectory's own sample, every step),
    zeroth    Psi = (f - mean f) z / (std alpha)         (z the step's injected noise; no gradient).

Adjoint matching (Domingo-Enrich et al., ICLR 2025) in EDM units. The memoryless process is
the reverse variance-exploding SDE in sigma-time, dx = -g^2 s(x, sigma) dsigma + g dW with
g^2 = 2 sigma (x_sigma_max is almost independent of x0), and its exact Gaussian discretization
is the ancestral sampler (DDIM, eta = 1: the DDPM posterior step). The control of a fine-tuned
model is u = g (s_theta - s_base) = g (D_theta - D_base) / sigma^2. The lean adjoint runs back
along a detached trajectory of the current model through the base model's step means,

    a_N = -grad f(x_N) / alpha,     a_k = grad_{x_k} < a_{k+1}, mean_base(x_k) >,

and at every state x_k the control is regressed onto -g a_k:

    L = mean_k || g_k (D_theta - D_base)(x_k) / sigma_k^2 + g_k a_k ||^2.

The optimum is s_theta = s_base - a, the score of p_base exp(f / alpha) where a is the exact
adjoint (-grad v / alpha); for a linear f on a Gaussian base the lean adjoint of the ancestral
chain is exact (its step means compose to E[x0 | x_k]). (For rectified flow in flow time this is the
memoryless SDE with drift 2v - x/t and the regression of 2 (v_theta - v_base) / sigma(t) onto -sigma(t)
a(t) (Domingo-Enrich et al. 2025, adjoint matching): the same process in other units.) Regressing per
state in continuous time, not the discrete step means, keeps the fixed point consistent across steps of
any size: on the test bed, the discrete form's fixed point missed the tilt by 60% at 16 steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor

from pirf.errors import ConfigError
from pirf.finetune.config import FinetuneConfig, PolicyConfig, RegressionConfig
from pirf.finetune.methods import Method, Rollout, Update, objective
from pirf.finetune.policy import PolicySampler, Trajectories, policy_sampler, roll_out, trained_steps
from pirf.models.denoiser import denoising_losses
from pirf.sampling import StepRecord, recompute_transition, sample_heun

Form = Literal["mse", "log-mse"]


def _check_alpha(alpha: float, name: str) -> None:
    if not alpha > 0:
        raise ConfigError(f"{name}: regression.alpha = {alpha}", "use alpha > 0 (the KL temperature)")


def _seed_generator(rollout: Rollout) -> torch.Generator:
    """A generator for the method's own draws, from the iteration's shared stream and this process's
    first row (so processes draw differently and a resumed run draws the same)."""
    offset = rollout.rows[0] if rollout.rows else 0
    return torch.Generator().manual_seed(int(rollout.rng.integers(2**62)) + offset)


def objective_gradient(rollout: Rollout, x: Tensor, form: Form) -> Tensor:
    """grad_x f(denormalize(x)) ``[B, C, H, W]`` in the model's normalized units (rows independent)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        value = objective(rollout.reward(rollout.normalization.denormalize(x)), form)
        (grad,) = torch.autograd.grad(value.sum(), x)
    return grad


def edm_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """EDM's loss weight lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2, shape of sigma."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _column(values: Tensor, like: Tensor) -> Tensor:
    return values.reshape((-1,) + (1,) * (like.ndim - 1))


def _per_sample_mse(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).pow(2).mean(dim=tuple(range(1, a.ndim)))


# -- reward-weighted regression ----------------------------------------------------------------------


class RewardWeightedRegression(Method):
    """RWR: the model's own denoising loss on samples weighted by exp(f / alpha) (module docstring).
    Zeroth order: the reward may be a black box."""

    needs_differentiable_reward = False

    def __init__(self, regression: RegressionConfig, epochs: int, form: Form, name: str = "rwr") -> None:
        _check_alpha(regression.alpha, name)
        self.alpha, self.epochs, self.form, self.name = regression.alpha, max(1, epochs), form, name
        self.sample_from = regression.rwr_sample_from
        self.needs_reference = self.sample_from == "base"

    def updates(self, rollout: Rollout) -> Iterator[Update]:
        if rollout.model is None:
            raise ConfigError("rwr trains with the model's own loss: the rollout carries no model")
        sampler = rollout.reference if self.sample_from == "base" else rollout.denoiser
        with torch.no_grad():
            x0 = sample_heun(sampler, rollout.noise, rollout.sigmas).x0
            reward = rollout.reward(rollout.normalization.denormalize(x0)).detach()
        values = rollout.global_values(objective(reward, self.form))
        weights = rollout.local_rows(torch.softmax(values / self.alpha, dim=0) * values.shape[0])
        generator = _seed_generator(rollout)
        ess = values.shape[0] / (weights.pow(2).mean() * values.shape[0])  # Kish's effective sample size
        logs = {"residual_mse": -reward, "weight": weights, "effective_samples": ess.reshape(1)}
        for _ in range(self.epochs):
            losses = denoising_losses(rollout.model, x0, generator)
            yield (weights * losses).mean(), logs


# -- reward score matching ---------------------------------------------------------------------------

GAMMA_OF_ESTIMATOR = {"tweedie": "constant", "denoised": "snr", "terminal": "snr", "zeroth": "inverse-snr"}


def gamma_weight(kind: str, sigma: Tensor, sigma_data: float) -> Tensor:
    """The temporal weight gamma(sigma) on the value-gradient estimate: constant 1; ``snr``
    sd^2 / (sd^2 + sigma^2) (-> 0 at high noise); ``inverse-snr`` sigma^2 / (sd^2 + sigma^2)."""
    if kind == "constant":
        return torch.ones_like(sigma)
    if kind == "snr":
        return sigma_data**2 / (sigma_data**2 + sigma**2)
    if kind == "inverse-snr":
        return sigma**2 / (sigma_data**2 + sigma**2)
    raise ConfigError(f"unknown regression.gamma {kind!r}", "use auto, constant, snr or inverse-snr")


def zeroth_order_estimate(values: Tensor, baseline: Tensor, record: StepRecord) -> Tensor:
    """(f_b - b) z_b / std_b ``[B, C, H, W]``: the zeroth-order estimate of the value gradient at a
    stochastic step, z the noise the step injected (x_next = mean + std z), f the trajectory's
    objective, b a baseline (the batch mean). By Stein's lemma its expectation is
    E[d f(x0) / d x_next] through the rest of the chain: no reward gradient is needed."""
    if record.noise is None:
        raise ConfigError(f"step {record.step} injected no noise", "use the stochastic steps only")
    return _column(values - baseline, record.x_t) * record.noise / _column(record.std, record.x_t)


class RewardScoreMatching(Method):
    """RSM: regress D onto D_base + sigma^2 gamma(sigma) Psi_hat (module docstring). First order
    (tweedie, denoised, terminal) needs a differentiable reward; zeroth order does not."""

    samples_rollout_chain = False  # rolls out with its own stochastic sampler

    needs_reference = True

    def __init__(
        self,
        sampler: PolicySampler,
        regression: RegressionConfig,
        policy: PolicyConfig,
        sigma_data: float,
        form: Form,
        name: str = "rsm",
    ) -> None:
        _check_alpha(regression.alpha, name)
        if regression.trust < 0:
            raise ConfigError(f"{name}: regression.trust = {regression.trust}", "use trust >= 0")
        self.sampler, self.regression, self.policy, self.form, self.name = (
            sampler,
            regression,
            policy,
            form,
            name,
        )
        self.estimator = regression.estimator
        self.gamma = GAMMA_OF_ESTIMATOR[self.estimator] if regression.gamma == "auto" else regression.gamma
        self.sigma_data = sigma_data
        self.needs_differentiable_reward = self.estimator != "zeroth"

    def updates(self, rollout: Rollout) -> Iterator[Update]:
        if rollout.reference is None:
            raise ConfigError(f"{self.name} needs the base model (rollout.reference)")
        batch = roll_out(self.sampler, rollout, self.form)
        states = batch.stochastic if self.estimator == "zeroth" else batch.records
        targets, olds = self._targets(rollout, batch, states)
        logs = {"residual_mse": -batch.reward}
        for _ in range(max(1, self.policy.epochs)):
            chosen = trained_steps(len(states), self.policy.timestep_fraction, rollout.rng)
            loss = 0.0
            for i in chosen:
                record = states[i]
                now = rollout.denoiser(record.x_t, record.sigma)
                weight = edm_weight(record.sigma, self.sigma_data)
                loss = loss + weight * _per_sample_mse(now, targets[i])
                if olds is not None:
                    loss = loss + self.regression.trust * weight * _per_sample_mse(now, olds[i])
            yield (loss / len(chosen)).mean(), logs

    def _targets(
        self, rollout: Rollout, batch: Trajectories, states: list[StepRecord]
    ) -> tuple[list[Tensor], list[Tensor] | None]:
        """D* per state (detached), and the rollout model's own D per state for the trust term."""
        alpha = self.regression.alpha
        terminal = objective_gradient(rollout, batch.x0, self.form) if self.estimator == "terminal" else None
        baseline = rollout.global_values(batch.value).mean()
        targets, olds = [], ([] if self.regression.trust > 0 else None)
        for record in states:
            sigma = _column(record.sigma, record.x_t)
            if self.estimator == "tweedie":
                base, psi = self._through_denoiser(rollout, record)
            else:
                with torch.no_grad():
                    base = rollout.reference(record.x_t, record.sigma)
                if self.estimator == "denoised":
                    psi = objective_gradient(rollout, base, self.form)
                elif self.estimator == "terminal":
                    psi = terminal
                else:
                    psi = zeroth_order_estimate(batch.value, baseline, record)
            gamma = gamma_weight(self.gamma, sigma, self.sigma_data)
            targets.append((base + sigma**2 * gamma * psi / alpha).detach())
            if olds is not None:
                with torch.no_grad():
                    olds.append(rollout.denoiser(record.x_t, record.sigma))
        return targets, olds

    def _through_denoiser(self, rollout: Rollout, record: StepRecord) -> tuple[Tensor, Tensor]:
        """(D_base(x_t), grad_{x_t} f(D_base(x_t))): the value gradient through the base denoiser."""
        with torch.enable_grad():
            x = record.x_t.detach().requires_grad_(True)
            base = rollout.reference(x, record.sigma)
            value = objective(rollout.reward(rollout.normalization.denormalize(base)), self.form)
            (grad,) = torch.autograd.grad(value.sum(), x)
        return base.detach(), grad


# -- adjoint matching --------------------------------------------------------------------------------


def lean_adjoints(
    reference: Callable[[Tensor, Tensor], Tensor], records: list[StepRecord], terminal: Tensor
) -> list[Tensor]:
    """The lean adjoint at every state of a trajectory, [a_0, ..., a_N] (module docstring):
    a_N = ``terminal``, a_k = grad_{x_k} < a_{k+1}, mean_base(x_k) >, one vector-Jacobian product
    through the base model per step; record k is the step x_k -> x_{k+1}."""
    adjoints = [terminal]
    for record in reversed(records):
        with torch.enable_grad():
            x = record.x_t.detach().requires_grad_(True)
            mean = recompute_transition(reference, replace(record, x_t=x)).mean
            (a,) = torch.autograd.grad(mean, x, grad_outputs=adjoints[-1])
        adjoints.append(a.detach())
    return adjoints[::-1]


class AdjointMatching(Method):
    """Adjoint matching on the ancestral (memoryless) sampler; see the module docstring. First
    order: needs a differentiable reward."""

    samples_rollout_chain = False  # rolls out with its own stochastic sampler

    needs_differentiable_reward = True
    needs_reference = True

    def __init__(
        self,
        sampler: PolicySampler,
        regression: RegressionConfig,
        policy: PolicyConfig,
        form: Form,
        name: str = "adjoint-matching",
    ) -> None:
        _check_alpha(regression.alpha, name)
        if sampler.kind != "ddim" or sampler.noise_level != 1.0:
            raise ConfigError(
                f"{name} runs on the memoryless ancestral sampler, not {sampler.kind} at noise level "
                f"{sampler.noise_level}",
                "use policy.sampler=ddim policy.noise_level=1.0 (the method's preset)",
            )
        self.sampler, self.alpha, self.policy, self.form, self.name = (
            sampler,
            regression.alpha,
            policy,
            form,
            name,
        )

    def updates(self, rollout: Rollout) -> Iterator[Update]:
        if rollout.reference is None:
            raise ConfigError(f"{self.name} needs the base model (rollout.reference)")
        batch = roll_out(self.sampler, rollout, self.form)
        terminal = -objective_gradient(rollout, batch.x0, self.form) / self.alpha
        adjoints = lean_adjoints(rollout.reference, batch.records, terminal)
        with torch.no_grad():
            bases = [rollout.reference(record.x_t, record.sigma) for record in batch.records]
        logs = {"residual_mse": -batch.reward}
        for _ in range(max(1, self.policy.epochs)):
            chosen = trained_steps(len(batch.records), self.policy.timestep_fraction, rollout.rng)
            loss = 0.0
            for k in chosen:
                record = batch.records[k]
                sigma = _column(record.sigma, record.x_t)
                g = (2 * sigma).sqrt()  # the memoryless diffusion coefficient, g^2 = d sigma^2 / d sigma
                control = g * (rollout.denoiser(record.x_t, record.sigma) - bases[k]) / sigma**2
                loss = loss + _per_sample_mse(control, -g * adjoints[k])
            yield (loss / len(chosen)).mean(), logs


def build_rwr(cfg: FinetuneConfig, model_kind: str, sigma_data: float) -> RewardWeightedRegression:
    """The registered builder of reward-weighted regression (`pirf.finetune.presets`)."""
    return RewardWeightedRegression(cfg.regression, cfg.policy.epochs, cfg.loss, cfg.method)


def build_rsm(cfg: FinetuneConfig, model_kind: str, sigma_data: float) -> RewardScoreMatching:
    """The registered builder of reward score matching (`pirf.finetune.presets`)."""
    sampler = policy_sampler(cfg, model_kind)
    return RewardScoreMatching(sampler, cfg.regression, cfg.policy, sigma_data, cfg.loss, cfg.method)


def build_adjoint_matching(cfg: FinetuneConfig, model_kind: str, sigma_data: float) -> AdjointMatching:
    """The registered builder of adjoint matching (`pirf.finetune.presets`)."""
    return AdjointMatching(policy_sampler(cfg, model_kind), cfg.regression, cfg.policy, cfg.loss, cfg.method)


__all__ = [
    "AdjointMatching",
    "RewardScoreMatching",
    "RewardWeightedRegression",
    "build_adjoint_matching",
    "build_rsm",
    "build_rwr",
    "edm_weight",
    "gamma_weight",
    "lean_adjoints",
    "objective_gradient",
    "zeroth_order_estimate",
]
