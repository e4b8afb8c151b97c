"""The fine-tuning loop shared by every method: sample -> loss -> step -> regularize -> log ->
evaluate -> checkpoint, on `accelerate` (CPU, one GPU, several processes).

Its pieces live beside it: the seeded rollout inputs (`pirf.finetune.seeds`: trajectory j of
iteration i starts from noise seeded by (seed, i, j), whatever process runs it), what the
processes share (`pirf.finetune.steps`), the run's context and held-out scoring
(`pirf.finetune.context`), the run folder and checkpoints (`pirf.finetune.run_folder`) and
evaluation and model selection (`pirf.finetune.selection`). What every training loop shares
comes from `pirf.training`: the guarded optimizer step (`steps`), the learning-rate schedule and
cadence (`schedule`), the checkpoint's tensors (`state`), bad-step accounting (`faults`), the run
folder's rules (`run_folder`) and the progress bar.

Several processes: each keeps a full replica and the gradients of the trained parameters are
averaged with one all-reduce per iteration. The loss is the local mean, the all-reduce averages
the locals: with equal local batches that is the global mean, as for one process.

Regularization (PIRF Sec. 4.3): the online penalty lambda ||theta - theta_base||^2 is added to
the loss; the EMA (from the base weights) is what periodic evaluation scores; early stopping
keeps the best evaluated EMA weights that the fidelity guard admits (`pirf.evaluation.guard`: the
fidelity score within the tolerance of the base model's, and every channel's spectrum, std and
amplitude errors within theirs); at the end, interpolations toward the base are scored too and
the best admissible candidate is written to ``model.safetensors``, with the reason in its record
(and each refused candidate's failed channel and term in ``selection.json``).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor

from pirf.config.limits import check_limits
from pirf.disk import checkpoint_bytes, require_space, run_space_needed, tensor_bytes
from pirf.errors import ConfigError
from pirf.files import append_jsonl, crash_point
from pirf.finetune.config import FinetuneConfig, RegularizationConfig, check_method_name, with_model_defaults
from pirf.finetune.context import build_context, fixed_channels, iteration_sigmas, residuals_by_steps, score
from pirf.finetune.methods import Method, checkpointed
from pirf.finetune.registry import make_method, refuse_black_box
from pirf.finetune.regularization import interpolate, online_penalty
from pirf.finetune.run_folder import RunState, prepare_run_dir, restore, run_record
from pirf.finetune.seeds import gather_rows, local_rows, seeded_rollout
from pirf.finetune.selection import evaluate_ema, select_model
from pirf.finetune.spectrum_anchor import base_log_spectrum
from pirf.finetune.steps import check_in_sync, gathered, learning_rate, weights_checksum
from pirf.locks import output_lock
from pirf.models.checkpoint import checkpoint_paths
from pirf.models.factory import describe
from pirf.pdes.base import check_seed
from pirf.rewards import make_reward
from pirf.training.ema import EMA, ema_beta
from pirf.training.engine import make_accelerator
from pirf.training.faults import diverged
from pirf.training.progress import progress_bar
from pirf.training.run_folder import rewind_logs
from pirf.training.schedule import due, set_learning_rate
from pirf.training.state import save_training_state
from pirf.training.steps import guarded_step


@dataclass
class FinetuneResult:
    run_dir: Path
    iterations: int
    seconds: float
    bad_steps: int
    selected: dict[str, Any]
    checksum: list[float]  # `weights_checksum` of the trained weights at the end (per process)


def _diverged(
    accelerator: Accelerator, logs: dict[str, Tensor], state: RunState, cfg: FinetuneConfig
) -> bool:
    """Whether this iteration's median residual (over every process's rollouts) has run away from
    the base model's held-out one at the same step count (`pirf.training.faults.diverged`)."""
    if cfg.divergence_factor <= 0 or "residual_mse" not in logs:
        return False
    median = gathered(accelerator, {"residual_mse": logs["residual_mse"].detach()})["residual_mse"]
    return diverged(median, base_residual_at(state, cfg, logs), cfg.divergence_factor)


def base_residual_at(state: RunState, cfg: FinetuneConfig, logs: dict[str, Tensor]) -> float | None:
    """The base model's held-out median residual at the step count of this iteration's chain
    (``logs["steps"]``; ``sampler.steps`` when not logged), None where it was not measured."""
    steps = int(logs["steps"].reshape(-1)[0]) if "steps" in logs else cfg.sampler.steps
    if steps == cfg.sampler.steps:
        return (state.base_score or {}).get("residual")
    return state.base_residual_by_steps.get(str(steps))


ANCHORS = ("anchor_fixed_channels", "anchor_chain", "anchor_spectrum")


def active_anchors(reg: RegularizationConfig, method: Method, talk: bool) -> tuple[str, ...]:
    """The ``regularization.anchor_*`` terms this run adds to its loss: those set (weight > 0), if
    ``method`` holds anchors (reward backpropagation); otherwise none, said once when some are set,
    so that a shipped config's anchors (tuned for PIRF) under another method are not mistaken for
    regularization that runs."""
    named = tuple(name for name in ANCHORS if getattr(reg, name) > 0)
    if method.holds_anchors or not named:
        return named
    if talk:
        print(
            f"note: {method.name} does not use {', '.join(f'regularization.{n}' for n in named)}; "
            "they apply to the methods that backpropagate the reward (pirf, the draft family, alignprop)",
            flush=True,
        )
    return ()


def finetune(
    cfg: FinetuneConfig, *, resume: bool = False, progress: bool = True, allow_change: bool = False
) -> FinetuneResult:
    """Fine-tune ``cfg.base`` with ``cfg.method``; with ``resume`` continue the run in ``cfg.out``
    (with ``allow_change``, under settings other than its own, recorded). The run folder is locked
    for the run's life: a second run into it is refused (`pirf.locks`)."""
    with output_lock(cfg.out, "a fine-tuning run"):
        return _finetune(cfg, resume=resume, progress=progress, allow_change=allow_change)


def _finetune(cfg: FinetuneConfig, *, resume: bool, progress: bool, allow_change: bool) -> FinetuneResult:
    check_limits(cfg)  # a config built in Python has not been through from_dict
    if Path(cfg.out).absolute() in (Path(cfg.base).absolute(), Path(cfg.base).absolute().parent):
        raise ConfigError(f"out = {cfg.out} would write over the base model {cfg.base}", "choose another out")
    check_seed(cfg.seed)
    check_seed(cfg.eval.seed, "eval.seed")
    accelerator = make_accelerator()
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % world:
        raise ConfigError(
            f"batch_size {cfg.batch_size} does not split over {world} processes",
            f"use a multiple of {world}",
        )
    check_method_name(cfg.method)
    cfg = with_model_defaults(cfg)  # what the base model decides, before the run folder records it
    talk = progress and accelerator.is_main_process  # the main process says what it is doing
    if talk:
        print(f"{cfg.method}: loading {cfg.base} and its held-out reference set", flush=True)
    ctx = build_context(cfg, accelerator, progress=talk)
    description = describe(ctx.model)
    method = make_method(cfg, description["kind"], float(description["sigma_data"]))
    if cfg.batch_size % (world * method.group_size):
        raise ConfigError(
            f"batch_size {cfg.batch_size} is not whole groups of {method.group_size} on {world} processes",
            f"use a multiple of {world * method.group_size}",
        )
    reward = make_reward(ctx.pde, cfg.reward)
    if method.needs_differentiable_reward and not reward.differentiable:
        refuse_black_box(method)
    if cfg.sampler.steps_choices and not method.samples_rollout_chain:
        raise ConfigError(
            f"sampler.steps_choices: {cfg.method} rolls out with its own stochastic sampler",
            "drop sampler.steps_choices (policy.steps sets that sampler's step count)",
        )
    params = [p for _, p in ctx.trained]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))
    ema = EMA(ctx.model)
    beta = ema_beta(cfg.batch_size, cfg.regularization.ema_halflife_samples)
    if accelerator.is_main_process:  # two checkpoints during a save, then the best and the chosen model
        need = 2 * checkpoint_bytes(ctx.model, params) + 4 * tensor_bytes(ctx.model.state_dict().values())
        require_space(cfg.out, run_space_needed(cfg.out, need), f"finetune ({cfg.method})")
    run_dir = prepare_run_dir(cfg, resume, allow_change) if accelerator.is_main_process else Path(cfg.out)
    accelerator.wait_for_everyone()
    latest, best_path = run_dir / "checkpoints" / "latest", run_dir / "checkpoints" / "best"
    state = RunState()
    if resume and checkpoint_paths(latest)[1].exists():  # without one, the run started over
        note = restore(latest, ctx.model, ema, optimizer, state)
        if note and progress and accelerator.is_main_process:
            print(note, flush=True)
        if accelerator.is_main_process:
            rewind_logs(run_dir, ("metrics.jsonl", "evals.jsonl"), "iteration", state.iteration)
    ctx.model.to(accelerator.device)
    ema.model.to(accelerator.device)
    if state.base_score is None:
        if talk:
            print(f"scoring the base model on {cfg.eval.n} held-out seeds", flush=True)
        state.base_score = score(ctx, ctx.model, cfg, progress=talk)
        if accelerator.is_main_process:
            append_jsonl(run_dir / "evals.jsonl", {"iteration": 0, "weights": "base", **state.base_score})
    if cfg.sampler.steps_choices and cfg.divergence_factor > 0 and not state.base_residual_by_steps:
        if talk:
            print("scoring the base model at every step count (the divergence check's yardstick)", flush=True)
        state.base_residual_by_steps = residuals_by_steps(ctx, ctx.model, cfg, progress=talk)
    denoiser = checkpointed(ctx.model) if cfg.gradient_checkpointing else ctx.model
    fixed = fixed_channels(reward, ctx.pde)
    reference = None
    reg = cfg.regularization
    anchors = active_anchors(reg, method, talk)
    if anchors or method.needs_reference:
        reference = copy.deepcopy(ctx.model).requires_grad_(False)
        reference.load_state_dict(interpolate(ctx.model.state_dict(), ctx.base, 0.0))
    spectrum = None
    if "anchor_spectrum" in anchors and reference is not None:  # the base samples' spectrum, once
        spectrum = base_log_spectrum(
            reference, ctx.record, ctx.normalization, cfg.sampler.steps, device=accelerator.device
        )
    local = local_rows(cfg.batch_size, world, rank, method.group_size)
    gather, resolution = gather_rows(accelerator, local), int(ctx.record["resolution"])
    t0, last_logs = time.perf_counter(), {}

    def save(path: Path, iteration: int) -> None:
        own = state.to_dict() | {"seconds": state.seconds + time.perf_counter() - t0}
        save_training_state(path, ctx.model, ema, optimizer, run_record(cfg, ctx, iteration), {"state": own})

    with progress_bar(
        progress and accelerator.is_main_process, cfg.method, cfg.iterations, state.iteration
    ) as bar:
        for iteration in range(state.iteration, cfg.iterations):
            crash_point("finetune.iteration")
            set_learning_rate(optimizer, learning_rate(cfg, iteration))
            rollout = seeded_rollout(
                cfg.seed,
                iteration,
                local,
                method.group_size,
                (len(ctx.pde.fields), resolution, resolution),
                device=accelerator.device,
                gather=gather,
                denoiser=denoiser,
                sigmas=iteration_sigmas(ctx, cfg, iteration),
                reward=reward,
                normalization=ctx.normalization,
                reference=reference,
                anchor_weight=cfg.regularization.anchor_fixed_channels,
                chain_anchor_weight=cfg.regularization.anchor_chain,
                anchor_whiten=cfg.regularization.anchor_whiten,
                spectrum_weight=reg.anchor_spectrum,
                spectrum_target=spectrum,
                fixed=fixed,
                model=ctx.model,
            )
            stepped, grad_norm, where = False, math.nan, f"iteration {iteration}"
            for k, (loss, logs) in enumerate(method.updates(rollout)):
                if k == 0 and _diverged(accelerator, logs, state, cfg):
                    state.bad.record(False)
                    reason = f"median residual above {cfg.divergence_factor:g}x the base model's"
                    state.bad.stop_if_persistent(cfg.max_bad_steps, cfg.method, where, latest, reason)
                    break
                if cfg.regularization.online_lambda > 0:
                    loss = loss + cfg.regularization.online_lambda * online_penalty(ctx.trained, ctx.base)
                ok, grad_norm = guarded_step(optimizer, params, loss, cfg.grad_clip, accelerator)
                stepped = stepped or ok
                state.bad.after_step(ok, cfg.max_bad_steps, cfg.method, where, latest, loss)
            if stepped:
                ema.update(ctx.model, beta)
            state.iteration = done = iteration + 1
            last_logs = gathered(accelerator, logs) | {
                "loss": float(accelerator.reduce(loss.detach().reshape(1), reduction="mean")),
                "grad_norm": grad_norm,
            }
            if accelerator.is_main_process and due(done, cfg.log_every, cfg.iterations):
                line = {
                    "iteration": done,
                    "lr": learning_rate(cfg, iteration),
                    **last_logs,
                    "bad_steps": state.bad.total,
                    "seconds": state.seconds + time.perf_counter() - t0,
                }
                append_jsonl(run_dir / "metrics.jsonl", line)
            if due(done, cfg.eval.every, cfg.iterations):
                bar.note(f"scoring the EMA weights on {cfg.eval.n} held-out seeds")
                evaluate_ema(ctx, ema.model, cfg, state, done, run_dir, best_path, accelerator)
            bar.update(
                done,
                reward=last_logs["reward"],
                residual=last_logs["residual_mse"],
                **({"best": state.best["residual"]} if state.best else {}),
            )
            good = state.bad.consecutive == 0  # no checkpoint of weights a bad step left
            if good and due(done, cfg.checkpoint_every, cfg.iterations):
                check_in_sync(accelerator, params, done)
                if accelerator.is_main_process:
                    save(latest, done)
    state.seconds += time.perf_counter() - t0
    selected = select_model(ctx, cfg, state, best_path, ema, run_dir, accelerator, progress)
    accelerator.wait_for_everyone()
    checksum = weights_checksum(params).tolist()
    return FinetuneResult(run_dir, cfg.iterations, state.seconds, state.bad.total, selected, checksum)


__all__ = ["FinetuneResult", "finetune"]
