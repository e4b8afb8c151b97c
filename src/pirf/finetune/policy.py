"""Stochastic rollouts and the policy-gradient methods: DDPO (PPO) and GRPO.

Rollouts (`PolicySampler`, `roll_out`): the model samples with a stochastic sampler that keeps
one `StepRecord` per step (x_t, x_next, mean, std, injected noise, sigma, dt, log-probability;
`pirf.sampling.stochastic`): DDIM with eta > 0 in EDM units for EDM models (DDPO's sampler),
the Flow-GRPO SDE for flow models. Every method that learns from stochastic trajectories (these
two, reward score matching's zeroth-order estimator, adjoint matching) reads the same records.

DDPO (Black et al. 2024, "Training Diffusion Models with Reinforcement Learning", Alg. 1 with
PPO): per stochastic step t of trajectory b, the ratio rho = exp(log pi_theta(x_next | x_t) -
log pi_old(x_next | x_t)) with log-probabilities averaged over dimensions, and the clipped loss

    L = mean_{b, t} max(-A_b rho, -A_b clip(rho, 1 - eps, 1 + eps)),

A_b the batch-normalized reward (r_b - mean) / (std + 1e-8) clipped to +- ``advantage_clip``;
several inner epochs reuse one batch of rollouts.

GRPO (Liu et al. 2025, Flow-GRPO): the same clipped objective with group-relative advantages
A_b = (r_b - mean_g) / (std_g + 1e-4) over the G trajectories that share their starting noise,
plus the KL term toward the base model's step means, beta mean (mu_theta - mu_base)^2 / (2 std^2).
The last step (to sigma = 0) injects no noise and is not trained; evaluation samples with the
deterministic ODE (the loop's Heun chain).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from pirf.errors import ConfigError
from pirf.finetune.config import FinetuneConfig, PolicyConfig
from pirf.finetune.methods import Method, Rollout, Update, objective
from pirf.sampling import (
    SampleOutput,
    StepRecord,
    recompute_transition,
    sample_ddim,
    sample_flow_sde,
    step_log_prob,
)
from pirf.sampling.chain import DenoiserFn
from pirf.sampling.draw import sigma_grid

DEFAULT_NOISE_LEVEL = {"ddim": 1.0, "flow_sde": 0.7}
"""DDPO samples DDIM at eta = 1; Flow-GRPO uses a = 0.7."""


@dataclass(frozen=True)
class PolicySampler:
    """The stochastic sampler a policy rolls out with: its kind, noise level and grid."""

    kind: Literal["ddim", "flow_sde"]
    noise_level: float
    sigmas: Tensor  # [N + 1]

    def sample(
        self, denoiser: DenoiserFn, noise: Tensor, generators: list[torch.Generator] | None
    ) -> SampleOutput:
        """Roll out from ``noise`` (the chain starts at sigmas[0] * noise), one record per step."""
        sigmas = self.sigmas.to(noise.dtype)
        if self.kind == "ddim":
            return sample_ddim(denoiser, noise, sigmas, eta=self.noise_level, generator=generators)
        return sample_flow_sde(denoiser, noise, sigmas, noise_level=self.noise_level, generator=generators)


def policy_sampler(cfg: FinetuneConfig, model_kind: str) -> PolicySampler:
    """The rollout sampler of ``cfg.policy``: ``auto`` is DDIM for EDM models, the flow SDE for flow
    models; the grid is the Karras grid of ``cfg.sampler`` (ddim) or a uniform flow-time grid
    (flow SDE), by `sigma_grid`'s rule for the sampler."""
    policy, s = cfg.policy, cfg.sampler
    kind = policy.sampler if policy.sampler != "auto" else ("flow_sde" if model_kind == "flow" else "ddim")
    level = DEFAULT_NOISE_LEVEL[kind] if policy.noise_level is None else float(policy.noise_level)
    steps = policy.steps or s.steps
    if kind == "ddim" and not 0 < level <= 1:
        raise ConfigError(f"policy.noise_level = {level} for ddim", "use 0 < eta <= 1 (DDPO: 1.0)")
    if kind == "flow_sde" and level <= 0:
        raise ConfigError(f"policy.noise_level = {level} for flow_sde", "use a > 0 (Flow-GRPO: 0.7)")
    sigmas = sigma_grid("edm", steps, kind, sigma_min=s.sigma_min, sigma_max=s.sigma_max, rho=s.rho)
    return PolicySampler(kind, level, sigmas.float())


@dataclass
class Trajectories:
    """A batch of stochastic rollouts of the model as it was when they were drawn."""

    records: list[StepRecord]  # one per step, in order; deterministic steps included
    x0: Tensor  # [B, C, H, W], normalized
    reward: Tensor  # [B], r on physical fields
    value: Tensor  # [B], the objective f(r) the method maximizes

    @property
    def stochastic(self) -> list[StepRecord]:
        """The steps that injected noise (the ones with a log-probability)."""
        return [record for record in self.records if not record.deterministic]


@torch.no_grad()
def roll_out(sampler: PolicySampler, rollout: Rollout, form: Literal["mse", "log-mse"]) -> Trajectories:
    """Sample the batch with ``sampler`` (no graph) and score it."""
    out = sampler.sample(rollout.denoiser, rollout.noise, rollout.generators)
    reward = rollout.reward(rollout.normalization.denormalize(out.x0)).detach()
    return Trajectories(out.records or [], out.x0, reward, objective(reward, form))


def advantages(values: Tensor, group_size: int, clip: float) -> Tensor:
    """Normalized, clipped advantages ``[B]`` of a global batch of objective values ``[B]``.

    group_size 1: (f - mean) / (std + 1e-8) over the batch (DDPO); G > 1: (f - mean_g) /
    (std_g + 1e-4) within each run of G consecutive rows (GRPO's groups). Population std.
    """
    if group_size <= 1:
        centred, scale = values - values.mean(), values.std(unbiased=False) + 1e-8
    else:
        if values.shape[0] % group_size:
            raise ConfigError(
                f"batch of {values.shape[0]} trajectories is not made of groups of {group_size}",
                "use a batch_size that is a multiple of policy.group_size",
            )
        groups = values.reshape(-1, group_size)
        centred = (groups - groups.mean(dim=1, keepdim=True)).reshape(-1)
        scale = (groups.std(dim=1, unbiased=False, keepdim=True) + 1e-4).expand_as(groups).reshape(-1)
    return (centred / scale).clamp(-clip, clip)


def trained_steps(n: int, fraction: float, rng: np.random.Generator) -> list[int]:
    """Which of n stochastic steps an inner epoch trains: all, or a random share ``fraction``
    (at least one), drawn with the iteration's generator (the same on every process)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"policy.timestep_fraction = {fraction}", "use 0 < timestep_fraction <= 1")
    if n == 0:
        raise ConfigError("the rollout sampler injected no noise", "use policy.noise_level > 0")
    if fraction == 1:
        return list(range(n))
    return sorted(rng.choice(n, size=max(1, round(fraction * n)), replace=False).tolist())


def ppo_terms(
    log_prob: Tensor, old_log_prob: Tensor, advantage: Tensor, clip: float
) -> tuple[Tensor, Tensor]:
    """(PPO's clipped loss per sample, whether the clip was active) for one step, both ``[B]``:
    max(-A rho, -A clip(rho, 1 - eps, 1 + eps)), rho = exp(log pi - log pi_old)."""
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantage * ratio
    clipped = -advantage * ratio.clamp(1 - clip, 1 + clip)
    return torch.maximum(unclipped, clipped), ((ratio - 1).abs() > clip).float()


class PolicyGradient(Method):
    """DDPO (``group_size`` 1, no KL) and GRPO (groups, KL toward the base): see the module
    docstring. Zeroth order: the reward may be a black box."""

    samples_rollout_chain = False  # rolls out with its own stochastic sampler

    needs_differentiable_reward = False

    def __init__(
        self, sampler: PolicySampler, policy: PolicyConfig, form: Literal["mse", "log-mse"], name: str
    ):
        if policy.epochs < 1 or policy.clip <= 0 or policy.advantage_clip <= 0 or policy.kl < 0:
            raise ConfigError(
                f"{name}: policy.epochs = {policy.epochs}, clip = {policy.clip}, advantage_clip = "
                f"{policy.advantage_clip}, kl = {policy.kl}",
                "use epochs >= 1, clip > 0, advantage_clip > 0, kl >= 0",
            )
        self.sampler, self.policy, self.form, self.name = sampler, policy, form, name
        self.group_size = max(1, policy.group_size)
        self.needs_reference = policy.kl > 0

    def updates(self, rollout: Rollout) -> Iterator[Update]:
        batch = roll_out(self.sampler, rollout, self.form)
        steps = batch.stochastic
        global_values = rollout.global_values(batch.value)
        advantage = rollout.local_rows(advantages(global_values, self.group_size, self.policy.advantage_clip))
        base_means = self._base_means(rollout, steps)
        logs = {"residual_mse": -batch.reward, "advantage_abs": advantage.abs()}
        for _ in range(self.policy.epochs):
            chosen = trained_steps(len(steps), self.policy.timestep_fraction, rollout.rng)
            loss, clipped, kl = 0.0, 0.0, 0.0
            for i in chosen:
                record = steps[i]
                now = recompute_transition(rollout.denoiser, record)
                log_prob = step_log_prob(now.mean, now.std, record.x_next)
                term, active = ppo_terms(log_prob, record.log_prob, advantage, self.policy.clip)
                loss = loss + term
                clipped = clipped + active
                if base_means is not None:
                    step_kl = mean_kl(now.mean, base_means[i], record.std)
                    loss = loss + self.policy.kl * step_kl
                    kl = kl + step_kl.detach()
            k = len(chosen)
            yield (loss / k).mean(), logs | {"clip_fraction": clipped / k, "kl": torch.as_tensor(kl) / k}

    def _base_means(self, rollout: Rollout, steps: list[StepRecord]) -> list[Tensor] | None:
        if not self.needs_reference:
            return None
        if rollout.reference is None:
            raise ConfigError(f"{self.name} needs the base model (rollout.reference) for its KL term")
        with torch.no_grad():
            return [recompute_transition(rollout.reference, record).mean for record in steps]


def mean_kl(mean: Tensor, base_mean: Tensor, std: Tensor) -> Tensor:
    """KL(N(mean, std^2 I) || N(base_mean, std^2 I)) averaged over dimensions ``[B]``:
    mean over dims of (mean - base_mean)^2 / (2 std^2) (Flow-GRPO's KL term)."""
    shape = (-1,) + (1,) * (mean.ndim - 1)
    return ((mean - base_mean) ** 2 / (2 * std.reshape(shape) ** 2)).mean(dim=tuple(range(1, mean.ndim)))


def build_policy_gradient(cfg: FinetuneConfig, model_kind: str, sigma_data: float) -> PolicyGradient:
    """The registered builder of DDPO and GRPO (`pirf.finetune.presets`)."""
    return PolicyGradient(policy_sampler(cfg, model_kind), cfg.policy, cfg.loss, cfg.method)


__all__ = [
    "PolicyGradient",
    "PolicySampler",
    "Trajectories",
    "advantages",
    "build_policy_gradient",
    "mean_kl",
    "policy_sampler",
    "ppo_terms",
    "roll_out",
    "trained_steps",
]
