"""Fine-tuning a test-bed model with the fine-tuning loop's own pieces (`finetune_testbed`), so a
method's result can be compared with the closed-form optimum (`pirf.testing.testbed`)."""

from __future__ import annotations

import copy

import torch

from pirf.finetune.config import FinetuneConfig
from pirf.finetune.registry import make_method, refuse_black_box
from pirf.finetune.seeds import seeded_rollout
from pirf.models.denoiser import SIGMA_MAX, Denoiser, FlowDenoiser
from pirf.normalization import Normalization
from pirf.rewards import Reward
from pirf.sampling import karras_sigmas
from pirf.training.steps import guarded_step


def finetune_testbed(
    model: Denoiser | FlowDenoiser, cfg: FinetuneConfig, reward: Reward
) -> list[dict[str, float]]:
    """Fine-tune a test-bed ``model`` in place with the method ``cfg.method`` names, with the
    fine-tuning loop's own pieces (`make_method`, `seeded_rollout`, the guarded step `guarded_step`), against
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
    sigma_max = s.sigma_max if s.sigma_max is not None else float(getattr(model, "sigma_max", SIGMA_MAX))
    sigmas = karras_sigmas(s.steps, s.sigma_min, sigma_max, s.rho).to(dtype)
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
            guarded_step(optimizer, params, loss, cfg.grad_clip)
        history.append({"reward": -float(logs["residual_mse"].mean()), "loss": float(loss.detach())})
    return history


__all__ = ["finetune_testbed"]
