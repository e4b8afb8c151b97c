"""What one fine-tuning run holds (`Context`: the model, its base, the physics, the held-out set)
and how it scores weights on the held-out eval seeds (`score`), as `pirf evaluate` does."""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor, nn

from pirf.data import read_fields
from pirf.errors import ConfigError
from pirf.evaluation.metrics import channel_terms, residual_summary
from pirf.evaluation.reference import reference_for
from pirf.evaluation.runner import score_samples
from pirf.finetune.config import FinetuneConfig, SamplerConfig
from pirf.finetune.seeds import iteration_steps
from pirf.models.loading import load_model
from pirf.models.record import record_pde
from pirf.models.resolution_map import select_parameters
from pirf.normalization import Normalization
from pirf.pdes.base import PDE
from pirf.rewards import Reward
from pirf.sampling.draw import generate_samples, sigma_grid
from pirf.sampling.guided import refuse_physics_guided


@dataclass
class Context:
    """What one run holds: the model, its base, the physics and the held-out set."""

    model: nn.Module
    record: dict[str, Any]
    pde: PDE
    normalization: Normalization
    trained: list[tuple[str, nn.Parameter]]
    base: dict[str, Tensor]  # theta_base of the trained parameters
    reference: np.ndarray  # held-out physical samples for the fidelity guard
    sigmas: Tensor


def select_trainable(model: nn.Module, example: Tensor, layers: str) -> list[tuple[str, nn.Parameter]]:
    chosen = select_parameters(model, example, layers)  # type: ignore[arg-type]
    if not chosen:
        raise ConfigError(f"layers={layers!r} selects no parameter of this model", "use layers=all")
    names = {name for name, _ in chosen}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in names)
    return chosen


def build_context(
    cfg: FinetuneConfig, accelerator: Accelerator | None = None, progress: bool = False
) -> Context:
    """Load the base model, freeze what is not trained, and get the held-out reference set (its
    solve shown with a progress bar when ``progress``)."""
    model, record, _ = load_model(cfg.base)
    refuse_physics_guided(record, "a fine-tune")
    pde = record_pde(record)
    normalization = Normalization.from_dict(record["normalization"])
    resolution = int(record["resolution"])
    example = torch.zeros(2, len(pde.fields), resolution, resolution)
    trained = select_trainable(model, example, cfg.layers)
    base = {name: p.detach().clone() for name, p in trained}
    first = accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext()
    with first:  # the main process solves (and caches) the held-out set, the others then read it
        ref_path, _ = reference_for(record, cfg.eval.reference, cfg.eval.n_reference, progress=progress)
    reference = read_fields(ref_path)
    sigmas = chain_sigmas(model, cfg.sampler, cfg.sampler.steps)
    return Context(model, record, pde, normalization, trained, base, reference, sigmas)


def chain_sigmas(model: nn.Module, sampler: SamplerConfig, steps: int) -> Tensor:
    """The noise levels ``[steps + 1]`` of the fine-tune's Heun chain (`sigma_grid`'s one rule)."""
    s = sampler
    return sigma_grid(model, steps, "heun", sigma_min=s.sigma_min, sigma_max=s.sigma_max, rho=s.rho)


def sigmas_for(ctx: Context, cfg: FinetuneConfig, steps: int) -> Tensor:
    """The chain of ``steps`` steps: the context's own for ``sampler.steps``, else `chain_sigmas`."""
    return ctx.sigmas if steps == cfg.sampler.steps else chain_sigmas(ctx.model, cfg.sampler, steps)


def iteration_sigmas(ctx: Context, cfg: FinetuneConfig, iteration: int) -> Tensor:
    """The chain of one training iteration: ``sampler.steps``'s, or with ``sampler.steps_choices``
    the chain of the step count drawn for this iteration (`iteration_steps`)."""
    choices = cfg.sampler.steps_choices
    steps = iteration_steps(cfg.seed, iteration, choices) if choices else cfg.sampler.steps
    return sigmas_for(ctx, cfg, steps)


def sample_eval_set(
    ctx: Context, model: nn.Module, cfg: FinetuneConfig, progress: bool = False, steps: int | None = None
) -> np.ndarray:
    """Physical samples of ``model`` from the fixed held-out eval seeds: the one seeded draw of
    `pirf sample` and `pirf evaluate` (`generate_samples`, sample i from (eval.seed, i)) on the
    fine-tune's own grid, so the in-loop numbers are those `pirf evaluate` reports; with ``steps``,
    a chain of that many steps instead of ``sampler.steps``."""
    steps = cfg.sampler.steps if steps is None else steps
    was_training = model.training
    drawn = generate_samples(
        model,
        ctx.record,
        cfg.eval.n,
        steps,
        cfg.eval.seed,
        batch_size=32,
        device=next(model.parameters()).device,
        progress=progress,
        sigmas=sigmas_for(ctx, cfg, steps),
    )
    model.train(was_training)
    return drawn.fields


def score(ctx: Context, model: nn.Module, cfg: FinetuneConfig, progress: bool = False) -> dict[str, Any]:
    """Held-out residual (median MSE, per region; projected as the reward sees the samples),
    fidelity score, its terms and every term per channel (`fidelity_report`, lower is better) of
    ``model``'s eval samples (their draw shown with a progress bar when ``progress``)."""
    samples = sample_eval_set(ctx, model, cfg, progress)
    floor = ctx.record.get("data", {}).get("floor") or {}
    result = score_samples(ctx.pde, samples, ctx.reference, floor)
    if result["nonfinite"] or result["fidelity"] is None:
        return {
            "finite": False,
            "residual": math.inf,
            "fidelity": math.inf,
            "regions": {},
            "terms": {},
            "channels": {},
        }
    return {
        "finite": True,
        "residual": result["residual"]["all"]["median_mse"],
        "fidelity": result["fidelity"]["fidelity_score"],
        "regions": {k: v["median_mse"] for k, v in result["residual"].items()},
        "terms": result["fidelity"]["score_terms"],
        "channels": channel_terms(result["fidelity"], ctx.pde.fields),
    }


def residuals_by_steps(
    ctx: Context, model: nn.Module, cfg: FinetuneConfig, progress: bool = False
) -> dict[str, float]:
    """``{"N": median residual MSE}`` of ``model``'s eval samples at every step count N of
    ``sampler.steps_choices`` other than ``sampler.steps`` (whose residual `score` gives): the base
    model's, the yardstick the divergence check holds each iteration's chain to. A 10-step chain's
    residual can be 100x a 20-step chain's from the same model; held to the 20-step one, every
    short chain would read as divergence and be skipped."""
    others = sorted(set(cfg.sampler.steps_choices) - {cfg.sampler.steps})
    medians = {}
    for n in others:
        summary = residual_summary(ctx.pde, sample_eval_set(ctx, model, cfg, progress, n))
        medians[str(n)] = float(summary["all"]["median_mse"])
    return medians


def score_state(
    ctx: Context, weights: dict[str, Tensor], cfg: FinetuneConfig, progress: bool = False
) -> dict[str, Any]:
    """`score` of a state dict (loaded into a copy of the model)."""
    model = copy.deepcopy(ctx.model)
    model.load_state_dict(weights)
    return score(ctx, model, cfg, progress)


def fixed_channels(reward: Reward, pde: PDE) -> Tensor:
    """``[C]`` bool: the channels the reward may not move (a residual reward's fixed inputs, also
    behind a black box); a user's reward fixes none."""
    movable = getattr(reward, "movable", None) or getattr(getattr(reward, "wraps", None), "movable", None)
    return torch.tensor([movable is not None and name not in movable for name in pde.fields])


__all__ = [
    "Context",
    "build_context",
    "fixed_channels",
    "residuals_by_steps",
    "sample_eval_set",
    "score",
    "score_state",
    "select_trainable",
]
