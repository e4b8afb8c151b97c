"""Fine-tuning methods: how a batch of rollouts and their rewards becomes a loss.

A method is its loss: `Method.updates(rollout)` yields one ``(loss, logs)`` per optimizer step
on a batch (one for reward backprop, several inner epochs for PPO); the loop
(`pirf.finetune.loop`) does everything else (seeds, the optimizer, regularization, evaluation,
checkpoints). The methods themselves: reward backprop here, policy gradient in
`pirf.finetune.policy`, regression toward the tilted base in `pirf.finetune.regression`; the
registry that builds them from a config in `pirf.finetune.registry`.

Reward backprop (`RewardBackprop`) is PIRF (Yuan et al. 2025) and its relatives: roll out the
deterministic Heun chain from seeded latents, the steps outside the gradient window without a
graph, and minimize the loss of the final sample,

    mse:      L = mean_b  m_b,           m_b = -r(x0_b) = mean over pixels of R(x0_b)^2,
    log-mse:  L = mean_b  log(m_b + eps),

where the log form is scale free: its gradient is grad(m_b) / m_b, so a sample whose residual
is already small pulls as hard as one far off, and the step size does not have to shrink as the
residual falls by orders of magnitude.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pirf.errors import ConfigError
from pirf.evaluation.distances import shell_power
from pirf.finetune.config import FinetuneConfig, TruncationConfig
from pirf.finetune.spectrum_anchor import spectrum_anchor
from pirf.normalization import Normalization
from pirf.rewards import Reward
from pirf.sampling import sample_heun

LOG_EPS = 1e-12


@dataclass
class Rollout:
    """What a method gets for one iteration on one process."""

    denoiser: Callable[[Tensor, Tensor], Tensor]  # D(x, sigma) in the model's normalized space
    noise: Tensor  # [B_local, C, H, W], row b from its own seed
    sigmas: Tensor  # [N + 1]
    reward: Reward  # on physical fields
    normalization: Normalization
    rng: np.random.Generator  # seeded by (seed, iteration): the same on every process
    reference: Callable[[Tensor, Tensor], Tensor] | None = None  # the frozen base model's D(x, sigma)
    anchor_weight: float = 0.0
    chain_anchor_weight: float = 0.0
    anchor_whiten: bool = False  # the anchors compare per wavenumber shell (`fixed_difference`)
    fixed: Tensor | None = None  # [C] bool: channels the reward may not move
    spectrum_weight: float = 0.0  # weight of the spectrum anchor (`spectrum_anchor`)
    spectrum_target: Tensor | None = None  # [C, K] the base samples' log shell power
    model: nn.Module | None = None  # the trained model itself (its own training loss: RWR)
    generators: list[torch.Generator] | None = None  # one per row, for the noise a sampler injects
    rows: list[int] | None = None  # the global trajectory index of each local row
    gather: Callable[[Tensor], Tensor] | None = None  # per-row [B_local] -> [B_global], index order

    def global_values(self, values: Tensor) -> Tensor:
        """Per-row values of every process, ``[B_global]`` in trajectory order (one process: as is)."""
        return values if self.gather is None else self.gather(values)

    def local_rows(self, values: Tensor) -> Tensor:
        """The entries of a ``[B_global]`` tensor that belong to this process's rows."""
        return values if self.rows is None or self.gather is None else values[self.rows]


Update = tuple[Tensor, dict[str, Tensor]]
"""One optimizer step: (loss to minimize, per-sample logs)."""


class Method(ABC):
    """A fine-tuning method: turns rollouts and rewards into losses to minimize.

    Class facts the loop reads: ``needs_differentiable_reward`` (first-order methods),
    ``needs_reference`` (the frozen base model's D is passed as ``rollout.reference``),
    ``group_size`` (rows j with the same j // group_size share their starting noise: GRPO),
    ``samples_rollout_chain`` (it rolls out on ``rollout.sigmas``, so the chain's step count can
    change per iteration; False: it has a sampler of its own), ``holds_anchors`` (it adds the
    ``regularization.anchor_*`` terms to its loss; the loop says when they are set and ignored).
    """

    name: str = "method"
    needs_differentiable_reward: bool = True
    needs_reference: bool = False
    group_size: int = 1
    samples_rollout_chain: bool = True
    holds_anchors: bool = False

    @abstractmethod
    def updates(self, rollout: Rollout) -> Iterator[Update]:
        """One (loss, logs) per optimizer step on this batch. Logs are 1-d tensors of per-sample
        values (the loop gathers them over processes and logs their mean, and the median of
        ``residual_mse``); they hold at least ``residual_mse`` = -reward per sample. The loop steps
        the optimizer between two yields, so a later loss sees the updated weights."""


def checkpointed(denoiser: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """The denoiser with activation checkpointing while a graph is built: each network call keeps
    only its inputs and recomputes its activations in the backward pass (memory O(calls), not
    O(calls x activations))."""

    def call(x: Tensor, sigma: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return checkpoint(denoiser, x, sigma, use_reentrant=False)
        return denoiser(x, sigma)

    return call


def objective(reward: Tensor, form: Literal["mse", "log-mse"]) -> Tensor:
    """What a method maximizes per sample ``[B]``, from the reward r = -(residual MSE):

        mse:      f = r,
        log-mse:  f = -log(-r + eps)     (needs r <= 0: the reward is read as minus an MSE).

    The policy-gradient and regression methods maximize f; reward backprop minimizes -f (see
    `reward_loss`). So the ``loss`` setting names one objective for every method.
    """
    if form == "mse":
        return reward
    if bool((reward > 0).any()):
        raise ConfigError(
            f"loss=log-mse reads the reward as minus an MSE, but it is positive ({float(reward.max()):.3g})",
            "use loss=mse with this reward",
        )
    return -torch.log(-reward + LOG_EPS)


def reward_loss(residual_mse: Tensor, form: Literal["mse", "log-mse"]) -> Tensor:
    """The loss of per-sample residual MSEs ``[B]``: -mean f(-mse) (see the module docstring)."""
    return -objective(-residual_mse, form).mean()


class RewardBackprop(Method):
    """PIRF / DRaFT / DRaFT-K / DRaFT-LV / AlignProp: backprop of the reward through the chain."""

    needs_differentiable_reward = True
    holds_anchors = True

    def __init__(self, truncation: TruncationConfig, form: Literal["mse", "log-mse"], name: str) -> None:
        self.truncation, self.form, self.name = truncation, form, name

    def updates(self, rollout: Rollout) -> Iterator[Update]:
        yield self.loss(rollout)

    def window(self, sigmas: Tensor, rng: np.random.Generator) -> int:
        """How many final steps of the chain ``sigmas`` ``[N + 1]`` carry gradients this iteration."""
        mode, k, n = self.truncation.mode, self.truncation.k, sigmas.shape[0] - 1
        if mode == "sigma":  # the steps starting at sigma_i <= truncation.sigma, at least the last
            return max(1, int((sigmas[:-1] <= self.truncation.sigma).sum()))
        if mode == "full":
            return n
        if mode == "random":
            return int(rng.integers(1, n + 1))
        if mode == "lv":
            return 1
        if not 1 <= k <= n:
            raise ConfigError(f"truncation.k = {k} for a {n}-step chain", f"use 1 <= k <= {n}")
        return k

    def loss(self, rollout: Rollout) -> Update:
        """The reward loss of the chain's final samples, gradients through the last K steps, plus
        the anchors on the channels the reward may not move (`fixed_channel_drift` at the
        window, `chain_anchor_drift` at one step before it) and the spectrum anchor on every
        channel (`spectrum_anchor`)."""
        n = rollout.sigmas.shape[0] - 1
        k = self.window(rollout.sigmas, rollout.rng)
        holds = rollout.fixed is not None and bool(rollout.fixed.any())
        anchored = rollout.anchor_weight > 0 and holds
        chained = rollout.chain_anchor_weight > 0 and holds and self.truncation.mode != "lv" and k < n
        trajectory = None
        if self.truncation.mode == "lv":
            x0, k = self._lv_samples(rollout), 1
        else:
            out = sample_heun(
                rollout.denoiser,
                rollout.noise,
                rollout.sigmas,
                grad_steps=k,
                return_trajectory=anchored or chained,
            )
            x0, trajectory = out.x0, out.trajectory
        mse = -rollout.reward(rollout.normalization.denormalize(x0))
        loss = reward_loss(mse, self.form)
        logs = {
            "residual_mse": mse.detach(),
            "window": torch.tensor([float(k)]),
            "steps": torch.tensor([float(n)]),
        }
        if anchored and trajectory is not None:
            entering = trajectory[n - k].detach()
            drift = fixed_channel_drift(rollout, entering, x0[: entering.shape[0]], n - k)
            loss = loss + rollout.anchor_weight * drift.mean()
            logs["anchor_drift"] = drift.detach()
        if rollout.spectrum_weight > 0 and rollout.spectrum_target is not None:
            anchor = spectrum_anchor(x0, rollout.spectrum_target)
            loss = loss + rollout.spectrum_weight * anchor
            logs["spectrum_anchor"] = anchor.detach().expand(mse.shape[0])
        if chained and trajectory is not None:
            step = int(rollout.rng.integers(0, n - k))
            drift = chain_anchor_drift(rollout, trajectory[step].detach(), rollout.sigmas[step])
            loss = loss + rollout.chain_anchor_weight * drift.mean()
            logs["chain_anchor_drift"] = drift.detach()
        return loss, logs

    def _lv_samples(self, rollout: Rollout) -> Tensor:
        """DRaFT-LV (Clark et al. 2024): the last step from x_{N-1} with gradient, plus
        ``lv_copies`` re-noised copies x0.detach() + sigma_{N-1} eps pushed through it again."""
        sigmas = rollout.sigmas
        x0 = sample_heun(rollout.denoiser, rollout.noise, sigmas, grad_steps=1).x0
        copies = [x0]
        generator = torch.Generator().manual_seed(int(rollout.rng.integers(2**62)))
        last = sigmas[-2:]
        for _ in range(self.truncation.lv_copies):
            eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
            start = (x0.detach() + last[0] * eps) / last[0]  # the chain starts at sigmas[0] * noise
            copies.append(sample_heun(rollout.denoiser, start, last, grad_steps=1).x0)
        return torch.cat(copies)


def fixed_channel_drift(rollout: Rollout, entering: Tensor, x0: Tensor, start: int) -> Tensor:
    """Per-sample mean squared difference ``[B]``, over the channels the reward may not move, between
    the fine-tuned model's x0 and the frozen base model's x0 from the same state x_start (the state
    entering the gradient window), in the model's normalized units:

        drift_b = mean_{c fixed, pixels} (x0_b - x0_b^base)^2.

    The reward cannot see those channels (Darcy's coefficient, a Poisson source), so nothing else
    holds them: the trained layers make every channel, and a fine-tune that improves u drifts a.
    """
    sigmas = rollout.sigmas[start:]
    with torch.no_grad():
        base = sample_heun(rollout.reference, entering / sigmas[0], sigmas).x0
    return fixed_difference(x0, base, rollout.fixed, rollout.anchor_whiten)


def chain_anchor_drift(rollout: Rollout, x: Tensor, sigma: Tensor) -> Tensor:
    """Per-sample mean squared difference ``[B]``, over the channels the reward may not move,
    between the fine-tuned and the frozen base denoiser's estimates from one state x_sigma of the
    chain (normalized units):

        drift_b = mean_{c fixed, pixels} (D_theta(x_b, sigma) - D_base(x_b, sigma))^2.

    Drawn at a step before the gradient window, it holds the fixed channels where
    `fixed_channel_drift` cannot: the trained layers act at every noise level, and what they
    change in a fixed channel early in the chain (its fine scales, its amplitude) survives to
    the sample. One extra call of each model per iteration.
    """
    with torch.no_grad():
        base = rollout.reference(x, sigma)
    return fixed_difference(rollout.denoiser(x, sigma), base, rollout.fixed, rollout.anchor_whiten)


def fixed_difference(x: Tensor, base: Tensor, fixed: Tensor, whiten: bool) -> Tensor:
    """How far ``x`` is from ``base`` on the ``fixed`` channels, per sample ``[B]``.

    Plain: mean_{c fixed, pixels} (x - base)^2. Whitened: the same difference's power per
    wavenumber shell relative to the base's power there (`shell_power`, batch-averaged),

        mean_{c fixed, k} P_{x - base}(k) / P_base(k),

    so each shell counts as the spectrum error counts it: a pixel MSE weighs shells by their
    absolute power, and a GRF source holds orders of magnitude less at high k than at low k, so
    rewriting its fine scales costs the plain form almost nothing.
    """
    mask = fixed.to(x.device)
    difference = x[:, mask] - base[:, mask]
    if not whiten:
        return difference.pow(2).mean(dim=(1, 2, 3))
    reference = shell_power(base[:, mask], center=False).mean(dim=0, keepdim=True)
    floor = 1e-12 * reference.amax(dim=-1, keepdim=True) + 1e-30
    return (shell_power(difference, center=False) / (reference + floor)).mean(dim=(1, 2))


def build_reward_backprop(cfg: FinetuneConfig, model_kind: str, sigma_data: float) -> RewardBackprop:
    """The registered builder of the reward-backprop methods (`pirf.finetune.presets`)."""
    return RewardBackprop(cfg.truncation, cfg.loss, cfg.method)


__all__ = [
    "Method",
    "RewardBackprop",
    "Rollout",
    "Update",
    "build_reward_backprop",
    "chain_anchor_drift",
    "checkpointed",
    "fixed_channel_drift",
    "fixed_difference",
    "objective",
    "reward_loss",
]
