"""The fine-tuning loop shared by every method: sample -> loss -> step -> regularize -> log ->
evaluate -> checkpoint, on `accelerate` (CPU, one GPU, several processes).

Seeds: trajectory j of iteration i starts from noise seeded by (seed, i, j), whatever process
runs it, so a run resumed from a checkpoint, or spread over P processes (each takes
j = rank, rank + P, ...), makes the same rollouts as one uninterrupted process.

Several processes: the network is called 2N - 1 times per rollout, a pattern DDP's reducer
(one forward per backward) does not support; so each process keeps a full replica and the
gradients of the trained parameters are averaged with one all-reduce per iteration
(`accelerate`'s ``reduce``). The loss is the local mean, the all-reduce averages the locals:
with equal local batches that is the global mean, as for one process.

Regularization (PIRF Sec. 4.3): the online penalty lambda ||theta - theta_base||^2 is added to
the loss; the EMA (from the base weights) is what periodic evaluation scores; early stopping
keeps the best evaluated EMA weights that the fidelity guard admits (`pirf.evaluation.guard`: the
fidelity score within the tolerance of the base model's, and every channel's spectrum, std and
amplitude errors within theirs); at the end, interpolations toward the base are scored too and
the best admissible candidate is written to ``model.safetensors``, with the reason in its record
(and each refused candidate's failed channel and term in ``selection.json``).

Run folder: ``config.json``, ``metrics.jsonl`` (iteration logs), ``evals.jsonl`` (evaluations),
``checkpoints/latest.*`` (everything to resume), ``checkpoints/best.*`` (early-stopping
weights) and ``model.{safetensors,json}`` (the selected model; loads like a base model).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor, nn

from pirf.config import to_dict
from pirf.data import read_fields
from pirf.disk import checkpoint_bytes, require_space, tensor_bytes
from pirf.errors import ConfigError, DataFileError, NonFiniteError, OutputExistsError
from pirf.evaluation.guard import GuardTolerances, Verdict, admissible, judge, worst_channel
from pirf.evaluation.metrics import channel_terms
from pirf.evaluation.reference import reference_for
from pirf.evaluation.runner import score_samples
from pirf.files import append_jsonl, crash_point, read_jsonl, truncate_jsonl, write_json, write_text
from pirf.finetune.config import FinetuneConfig, check_method_name
from pirf.finetune.methods import Rollout, checkpointed
from pirf.finetune.registry import make_method, refuse_black_box
from pirf.finetune.regularization import interpolate, online_penalty
from pirf.models.checkpoint import checkpoint_paths, load_checkpoint, recover_checkpoint, save_checkpoint
from pirf.models.factory import describe
from pirf.models.loading import load_model
from pirf.models.record import record_pde
from pirf.models.resolution_map import select_parameters
from pirf.normalization import Normalization
from pirf.pdes.base import PDE, check_seed
from pirf.rewards import Reward, make_reward
from pirf.sampling import per_sample_noise
from pirf.sampling.draw import generate_samples, sigma_grid
from pirf.training.ema import EMA, ema_beta
from pirf.training.engine import make_accelerator
from pirf.training.faults import BadSteps, agreed, diverged, finite_gradients, nonfinite_reason
from pirf.training.progress import progress_bar
from pirf.training.state import load_optimizer, optimizer_tensors, prefixed, unprefixed


@dataclass
class FinetuneResult:
    run_dir: Path
    iterations: int
    seconds: float
    bad_steps: int
    selected: dict[str, Any]
    checksum: list[float]  # `weights_checksum` of the trained weights at the end (per process)


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


# -- seeds ------------------------------------------------------------------------------------------


def trajectory_generators(
    seed: int, iteration: int, indices: range | list[int], stream: int = 0
) -> list[torch.Generator]:
    """One generator per trajectory j, seeded by (seed, iteration, j); ``stream`` > 0 gives other
    independent streams (the noise a stochastic sampler injects along the way)."""
    key = [] if stream == 0 else [stream]
    return [
        torch.Generator().manual_seed(
            int(np.random.SeedSequence([seed, iteration, j, *key]).generate_state(1)[0])
        )
        for j in indices
    ]


def iteration_rng(seed: int, iteration: int) -> np.random.Generator:
    """The per-iteration generator shared by all processes (random truncation points, LV noise)."""
    return np.random.default_rng([seed, iteration, 2**31 - 1])


# -- set-up -----------------------------------------------------------------------------------------


def _trainable(model: nn.Module, example: Tensor, layers: str) -> list[tuple[str, nn.Parameter]]:
    chosen = select_parameters(model, example, layers)  # type: ignore[arg-type]
    if not chosen:
        raise ConfigError(f"layers={layers!r} selects no parameter of this model", "use layers=all")
    names = {name for name, _ in chosen}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in names)
    return chosen


def build_context(cfg: FinetuneConfig, accelerator: Accelerator | None = None) -> Context:
    """Load the base model, freeze what is not trained, and get the held-out reference set."""
    model, record, _ = load_model(cfg.base)
    pde = record_pde(record)
    normalization = Normalization.from_dict(record["normalization"])
    resolution = int(record["resolution"])
    example = torch.zeros(2, len(pde.fields), resolution, resolution)
    trained = _trainable(model, example, cfg.layers)
    base = {name: p.detach().clone() for name, p in trained}
    first = accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext()
    with first:  # the main process solves (and caches) the held-out set, the others then read it
        ref_path, _ = reference_for(record, cfg.eval.reference, cfg.eval.n_reference, progress=False)
    reference = read_fields(ref_path)
    s = cfg.sampler
    sigmas = sigma_grid(model, s.steps, "heun", sigma_min=s.sigma_min, sigma_max=s.sigma_max, rho=s.rho)
    return Context(model, record, pde, normalization, trained, base, reference, sigmas)


# -- evaluation -------------------------------------------------------------------------------------


def sample_eval_set(ctx: Context, model: nn.Module, cfg: FinetuneConfig) -> np.ndarray:
    """Physical samples of ``model`` from the fixed held-out eval seeds: the one seeded draw of
    `pirf sample` and `pirf evaluate` (`generate_samples`, sample i from (eval.seed, i)) on the
    fine-tune's own grid, so the in-loop numbers are those `pirf evaluate` reports."""
    was_training = model.training
    drawn = generate_samples(
        model,
        ctx.record,
        cfg.eval.n,
        cfg.sampler.steps,
        cfg.eval.seed,
        batch_size=32,
        device=next(model.parameters()).device,
        progress=False,
        sigmas=ctx.sigmas,
    )
    model.train(was_training)
    return drawn.fields


def score(ctx: Context, model: nn.Module, cfg: FinetuneConfig) -> dict[str, Any]:
    """Held-out residual (median MSE, per region; projected as the reward sees the samples),
    fidelity score, its terms and every term per channel (`fidelity_report`, lower is better) of
    ``model``'s eval samples."""
    samples = sample_eval_set(ctx, model, cfg)
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


# -- the loop ---------------------------------------------------------------------------------------


def _learning_rate(cfg: FinetuneConfig, iteration: int) -> float:
    warm = min(1.0, (iteration + 1) / max(1, cfg.warmup_iterations))
    if cfg.lr_schedule == "constant":
        return cfg.lr * warm
    progress = iteration / max(1, cfg.iterations)
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))


def _prepare_run_dir(cfg: FinetuneConfig, resume: bool) -> Path:
    """The run folder, ready to start or resume (main process only). A new run gets
    ``config.json`` and empty logs. With ``resume``, checkpoint saves killed midway are finished
    first (`recover_checkpoint`); a run killed before its first checkpoint starts over."""
    run_dir = Path(cfg.out)
    recover_checkpoint(run_dir / "checkpoints" / "best")
    has_checkpoint = recover_checkpoint(run_dir / "checkpoints" / "latest")
    if resume and has_checkpoint:
        return run_dir
    if has_checkpoint:
        raise OutputExistsError(
            f"{run_dir} already holds a fine-tuning run",
            "pass --resume to continue it, or choose another out",
        )
    if resume and not (run_dir / "config.json").exists():
        raise DataFileError(f"{run_dir} holds no fine-tuning run to resume", "start it without --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", to_dict(cfg))
    for name in ("metrics.jsonl", "evals.jsonl"):
        write_text(run_dir / name, "")
    return run_dir


def _all_reduce_gradients(accelerator: Accelerator, params: list[nn.Parameter]) -> None:
    if accelerator.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def _gathered(accelerator: Accelerator, logs: dict[str, Tensor]) -> dict[str, float]:
    """Per-sample logs of all processes, reduced: the mean of each, and for ``residual_mse`` the
    median too (``reward`` = -mean residual); equal to what one process with the global batch logs."""
    values = {k: accelerator.gather(v.reshape(-1).float().contiguous()) for k, v in logs.items()}
    out = {k: float(v.mean()) for k, v in values.items()}
    if "residual_mse" in values:
        out["reward"] = -out.pop("residual_mse")
        out["residual_mse"] = float(values["residual_mse"].median())
    return out


def _diverged(accelerator: Accelerator, logs: dict[str, Tensor], state: _State, cfg: FinetuneConfig) -> bool:
    """Whether this iteration's median residual (over every process's rollouts) has run away from
    the base model's held-out one (`pirf.training.faults.diverged`)."""
    if cfg.divergence_factor <= 0 or "residual_mse" not in logs:
        return False
    median = _gathered(accelerator, {"residual_mse": logs["residual_mse"].detach()})["residual_mse"]
    return diverged(median, (state.base_score or {}).get("residual"), cfg.divergence_factor)


def weights_checksum(params: list[nn.Parameter]) -> Tensor:
    """A float64 fingerprint of the trained weights (sum and sum of squares)."""
    flat = torch.cat([p.detach().reshape(-1).double() for p in params])
    return torch.stack([flat.sum(), flat.pow(2).sum()])


def _check_in_sync(accelerator: Accelerator, params: list[nn.Parameter], iteration: int) -> None:
    """Every process must hold the same weights (same averaged gradients, same optimizer)."""
    if accelerator.num_processes == 1:
        return
    sums = accelerator.gather(weights_checksum(params).reshape(1, 2))
    if not bool((sums == sums[0]).all()):
        raise NonFiniteError(
            f"the {accelerator.num_processes} processes hold different weights at iteration {iteration}",
            "report this as a bug; resume from the last checkpoint on one process",
        )


def fixed_channels(reward: Reward, pde: PDE) -> Tensor:
    """``[C]`` bool: the channels the reward may not move (a residual reward's fixed inputs, also
    behind a black box); a user's reward fixes none."""
    movable = getattr(reward, "movable", None) or getattr(getattr(reward, "wraps", None), "movable", None)
    return torch.tensor([movable is not None and name not in movable for name in pde.fields])


def _local_rows(batch_size: int, world: int, rank: int, group_size: int) -> list[int]:
    """The trajectories this process rolls out: every world-th one (j = rank, rank + P, ...), or,
    with groups (GRPO), every world-th whole group, so a group's statistics stay on one process."""
    groups = range(rank, batch_size // group_size, world)
    return [g * group_size + i for g in groups for i in range(group_size)]


def seeded_rollout(
    seed: int,
    iteration: int,
    rows: list[int],
    group_size: int,
    shape: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    gather: Callable[[Tensor], Tensor] | None = None,
    **fields: Any,
) -> Rollout:
    """The seeded inputs of one iteration: row j starts from noise ``shape`` (without the batch)
    seeded by (seed, iteration, j // group_size) (so a group shares it), a sampler that injects
    noise draws it from stream 1 of (seed, iteration, j), and the method's own draws come from
    the iteration's shared generator. ``fields`` fill the rest of the `Rollout`."""
    starts = trajectory_generators(seed, iteration, [j // group_size for j in rows])
    noise = per_sample_noise((len(rows), *shape), starts, dtype=dtype).to(device)
    return Rollout(
        noise=noise,
        rng=iteration_rng(seed, iteration),
        generators=trajectory_generators(seed, iteration, rows, stream=1),
        rows=rows,
        gather=gather,
        **fields,
    )


def _gather_rows(accelerator: Accelerator, rows: list[int]) -> Callable[[Tensor], Tensor] | None:
    """Per-row values of all processes in trajectory order (None on one process)."""
    if accelerator.num_processes == 1:
        return None
    index = torch.tensor(rows, device=accelerator.device)

    def gather(values: Tensor) -> Tensor:
        every, where = accelerator.gather(values.contiguous()), accelerator.gather(index)
        return torch.empty_like(every).index_copy_(0, where, every)

    return gather


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    loss: Tensor,
    grad_clip: float,
    accelerator: Accelerator | None = None,
) -> tuple[bool, float]:
    """One step on ``loss``: backward, average the gradients over processes, skip the step
    everywhere if any process has a non-finite loss or gradient, clip the norm to ``grad_clip``
    (0: no clip), step. Returns (stepped, gradient norm before clipping)."""
    optimizer.zero_grad(set_to_none=True)
    ok = agreed(bool(torch.isfinite(loss)), accelerator)
    if ok:
        loss.backward()
        if accelerator is not None:
            _all_reduce_gradients(accelerator, params)
    if not (ok and agreed(finite_gradients(params), accelerator)):
        optimizer.zero_grad(set_to_none=True)
        return False, math.nan
    grad_norm = _grad_norm(params)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return True, grad_norm


def _grad_norm(params: list[nn.Parameter]) -> float:
    grads = [p.grad.reshape(-1) for p in params if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


class _State:
    """The mutable state a checkpoint carries besides tensors."""

    def __init__(self) -> None:
        self.iteration = 0
        self.bad = BadSteps()
        self.seconds = 0.0
        self.base_score: dict[str, Any] | None = None
        self.best: dict[str, Any] | None = None  # {"iteration", "residual", "fidelity"}

    def to_dict(self) -> dict[str, Any]:
        own = {k: v for k, v in vars(self).items() if k != "bad"}
        return own | {"bad_steps": self.bad.total, "consecutive_bad": self.bad.consecutive}

    def load(self, record: dict[str, Any]) -> None:
        for key in vars(self):
            if key != "bad":
                setattr(self, key, record[key])
        self.bad = BadSteps(record["bad_steps"], record["consecutive_bad"])


def finetune(cfg: FinetuneConfig, *, resume: bool = False, progress: bool = True) -> FinetuneResult:
    """Fine-tune ``cfg.base`` with ``cfg.method``; with ``resume`` continue the run in ``cfg.out``."""
    if cfg.iterations < 1 or cfg.batch_size < 1:
        raise ConfigError("finetune: iterations and batch_size must be positive", "pass e.g. iterations=100")
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
    ctx = build_context(cfg, accelerator)
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
    params = [p for _, p in ctx.trained]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))
    ema = EMA(ctx.model)
    beta = ema_beta(cfg.batch_size, cfg.regularization.ema_halflife_samples)
    if accelerator.is_main_process:  # two checkpoints during a save, then the best and the chosen model
        need = 2 * checkpoint_bytes(ctx.model, params) + 4 * tensor_bytes(ctx.model.state_dict().values())
        require_space(cfg.out, need, f"finetune ({cfg.method})")
    run_dir = _prepare_run_dir(cfg, resume) if accelerator.is_main_process else Path(cfg.out)
    accelerator.wait_for_everyone()
    latest, best_path = run_dir / "checkpoints" / "latest", run_dir / "checkpoints" / "best"
    state = _State()
    if resume and checkpoint_paths(latest)[1].exists():  # without one, the run started over
        _restore(latest, ctx.model, ema, optimizer, state)
        if accelerator.is_main_process:  # drop what the run logged after its checkpoint: it is redone
            truncate_jsonl(run_dir / "metrics.jsonl", "iteration", state.iteration)
            truncate_jsonl(run_dir / "evals.jsonl", "iteration", state.iteration)
    ctx.model.to(accelerator.device)
    ema.model.to(accelerator.device)
    if state.base_score is None:
        state.base_score = score(ctx, ctx.model, cfg)
        if accelerator.is_main_process:
            append_jsonl(run_dir / "evals.jsonl", {"iteration": 0, "weights": "base", **state.base_score})
    denoiser = checkpointed(ctx.model) if cfg.gradient_checkpointing else ctx.model
    fixed = fixed_channels(reward, ctx.pde)
    reference = None
    if cfg.regularization.anchor_fixed_channels > 0 or method.needs_reference:
        reference = copy.deepcopy(ctx.model).requires_grad_(False)
        reference.load_state_dict(interpolate(ctx.model.state_dict(), ctx.base, 0.0))
    local = _local_rows(cfg.batch_size, world, rank, method.group_size)
    gather, resolution = _gather_rows(accelerator, local), int(ctx.record["resolution"])
    t0, last_logs = time.perf_counter(), {}

    def save(path: Path, iteration: int) -> None:
        opt_tensors, opt_record = optimizer_tensors(optimizer)
        tensors = {
            **prefixed("model", ctx.model.state_dict()),
            **prefixed("ema", ema.state_dict()),
            **opt_tensors,
        }
        record = _record(cfg, ctx, iteration) | {
            "optimizer": opt_record,
            "state": state.to_dict() | {"seconds": state.seconds + time.perf_counter() - t0},
        }
        save_checkpoint(path, tensors, record)

    with progress_bar(
        progress and accelerator.is_main_process, cfg.method, cfg.iterations, state.iteration
    ) as bar:
        for iteration in range(state.iteration, cfg.iterations):
            crash_point("finetune.iteration")
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(cfg, iteration)
            rollout = seeded_rollout(
                cfg.seed,
                iteration,
                local,
                method.group_size,
                (len(ctx.pde.fields), resolution, resolution),
                device=accelerator.device,
                gather=gather,
                denoiser=denoiser,
                sigmas=ctx.sigmas,
                reward=reward,
                normalization=ctx.normalization,
                reference=reference,
                anchor_weight=cfg.regularization.anchor_fixed_channels,
                fixed=fixed,
                model=ctx.model,
            )
            stepped, grad_norm = False, math.nan
            for k, (loss, logs) in enumerate(method.updates(rollout)):
                if k == 0 and _diverged(accelerator, logs, state, cfg):
                    state.bad.record(False)
                    reason = f"median residual above {cfg.divergence_factor:g}x the base model's"
                    state.bad.stop_if_persistent(
                        cfg.max_bad_steps, cfg.method, f"iteration {iteration}", latest, reason
                    )
                    break
                if cfg.regularization.online_lambda > 0:
                    loss = loss + cfg.regularization.online_lambda * online_penalty(ctx.trained, ctx.base)
                ok, grad_norm = optimizer_step(optimizer, params, loss, cfg.grad_clip, accelerator)
                state.bad.record(ok)
                stepped = stepped or ok
                state.bad.stop_if_persistent(
                    cfg.max_bad_steps, cfg.method, f"iteration {iteration}", latest, nonfinite_reason(loss)
                )
            if stepped:
                ema.update(ctx.model, beta)
            state.iteration = done = iteration + 1
            last_logs = _gathered(accelerator, logs) | {
                "loss": float(accelerator.reduce(loss.detach().reshape(1), reduction="mean")),
                "grad_norm": grad_norm,
            }
            if accelerator.is_main_process and (done % cfg.log_every == 0 or done == cfg.iterations):
                line = {
                    "iteration": done,
                    "lr": _learning_rate(cfg, iteration),
                    **last_logs,
                    "bad_steps": state.bad.total,
                    "seconds": state.seconds + time.perf_counter() - t0,
                }
                append_jsonl(run_dir / "metrics.jsonl", line)
            if done % cfg.eval.every == 0 or done == cfg.iterations:
                _evaluate(ctx, ema.model, cfg, state, done, run_dir, best_path, accelerator)
            bar.update(
                done,
                reward=last_logs["reward"],
                residual=last_logs["residual_mse"],
                **({"best": state.best["residual"]} if state.best else {}),
            )
            good = state.bad.consecutive == 0  # no checkpoint of weights a bad step left
            if good and (done % cfg.checkpoint_every == 0 or done == cfg.iterations):
                _check_in_sync(accelerator, params, done)
                if accelerator.is_main_process:
                    save(latest, done)
    state.seconds += time.perf_counter() - t0
    selected = _select(ctx, cfg, state, best_path, ema, run_dir, accelerator, progress)
    accelerator.wait_for_everyone()
    checksum = weights_checksum(params).tolist()
    return FinetuneResult(run_dir, cfg.iterations, state.seconds, state.bad.total, selected, checksum)


def _record(cfg: FinetuneConfig, ctx: Context, iteration: int) -> dict[str, Any]:
    """The checkpoint record: the base model's record (PDE, normalization, data provenance) with
    the fine-tune's config on top, so a fine-tuned model loads wherever its base loads."""
    keep = ("pde", "pde_params", "fields", "resolution", "normalization", "data")
    return {k: ctx.record[k] for k in keep if k in ctx.record} | {
        "stage": "finetune",
        "method": cfg.method,
        "model": describe(ctx.model),
        "base": {"spec": cfg.base, "sha256": ctx.record.get("sha256"), "stage": ctx.record.get("stage")},
        "config": to_dict(cfg),
        "iteration": iteration,
    }


def _restore(
    latest: Path, model: nn.Module, ema: EMA, optimizer: torch.optim.Optimizer, state: _State
) -> None:
    tensors, record = load_checkpoint(latest, expect={"stage": "finetune"})
    model.load_state_dict(unprefixed("model", tensors))
    ema.load_state_dict(unprefixed("ema", tensors))
    load_optimizer(optimizer, tensors, record["optimizer"])
    state.load(record["state"])


def _evaluate(
    ctx: Context,
    weights: nn.Module,
    cfg: FinetuneConfig,
    state: _State,
    iteration: int,
    run_dir: Path,
    best_path: Path,
    accelerator: Accelerator,
) -> None:
    """Score the EMA weights on the held-out seeds; keep them if they are the best the fidelity
    guard admits. The guard's verdict (which channel and term failed) goes to ``evals.jsonl``."""
    result = score(ctx, weights, cfg)
    verdict = judge(result, state.base_score, GuardTolerances.of(cfg.regularization))
    improved = (
        cfg.regularization.early_stopping
        and verdict.ok
        and (state.best is None or result["residual"] < state.best["residual"])
    )
    if improved:
        keep = ("residual", "fidelity", "channels")
        state.best = {"iteration": iteration, **{k: result[k] for k in keep}}
    if accelerator.is_main_process:
        line = {
            "iteration": iteration,
            "weights": "ema",
            **result,
            "guard": verdict.to_dict(),
            "best": improved,
        }
        append_jsonl(run_dir / "evals.jsonl", line)
        if improved:
            save_checkpoint(best_path, weights.state_dict(), {"stage": "finetune-best", **state.best})


def _select(
    ctx: Context,
    cfg: FinetuneConfig,
    state: _State,
    best_path: Path,
    ema: EMA,
    run_dir: Path,
    accelerator: Accelerator,
    progress: bool = False,
) -> dict[str, Any]:
    """Score the candidates (final EMA, early-stopping best, their interpolations toward the base)
    and write the admissible one with the lowest held-out residual as ``model.safetensors``. The
    base itself is a candidate: if nothing beats it within the fidelity guard, the base weights are
    written and the record says so. Each candidate's verdict (the channel and term that failed)
    is recorded in ``selection.json`` and, with ``progress``, printed."""
    evals = read_jsonl(run_dir / "evals.jsonl")
    final_eval = next(
        e for e in reversed(evals) if e["weights"] == "ema" and e["iteration"] == state.iteration
    )
    final = {k: v.clone() for k, v in ema.state_dict().items()}
    candidates = [("base", 0.0, interpolate(final, ctx.base, 0.0), state.base_score)]
    candidates.append(("final EMA", 1.0, final, final_eval))
    anchor, anchor_name = final, "final EMA"
    if cfg.regularization.early_stopping and state.best is not None:
        anchor, anchor_name = load_checkpoint(best_path)[0], f"best EMA (iteration {state.best['iteration']})"
        candidates.append((anchor_name, 1.0, anchor, {"finite": True, **state.best}))
    for alpha in cfg.regularization.alphas:
        mixed = interpolate(anchor, ctx.base, alpha)
        candidates.append((anchor_name, alpha, mixed, score_state(ctx, mixed, cfg)))
    tolerances = GuardTolerances.of(cfg.regularization)
    verdicts = [judge(c[3], state.base_score, tolerances) for c in candidates]
    kept = [c for c, v in zip(candidates, verdicts, strict=True) if v.ok]
    if progress and accelerator.is_main_process:
        for (n, a, _, _), v in zip(candidates, verdicts, strict=True):
            if not v.ok:
                print(f"fidelity guard refused {n} (alpha {a:g}): {'; '.join(v.failures)}", flush=True)
    if kept:
        name, alpha, weights, result = min(kept, key=lambda c: c[3]["residual"])
    else:
        name, alpha, weights, result = (
            "base (no candidate kept the fidelity guard)",
            0.0,
            None,
            state.base_score,
        )
        weights = interpolate(anchor, ctx.base, 0.0)
    base = state.base_score
    selected = {
        "chosen": _summary(name, alpha, result, base, tolerances),
        "base": {
            "residual": base["residual"],
            "fidelity": base["fidelity"],
            "channels": base.get("channels"),
        },
        "candidates": [_summary(n, a, r, base, tolerances) for n, a, _, r in candidates],
        "fidelity_tolerance": tolerances.fidelity,
        "guard": tolerances.to_dict(),
    }
    if accelerator.is_main_process:
        tensors = {**prefixed("ema", weights), **prefixed("model", ctx.model.state_dict())}
        record = _record(cfg, ctx, state.iteration) | {
            "selection": selected,
            "bad_steps": state.bad.total,
            "train_seconds": state.seconds,
        }
        save_checkpoint(run_dir / "model", tensors, record)
        write_json(run_dir / "selection.json", selected)
    return selected


def _summary(
    name: str, alpha: float, result: dict[str, Any], base: dict[str, Any], tolerances: GuardTolerances
) -> dict[str, Any]:
    """One candidate of the selection: its scores, the guard's verdict and its worst channel."""
    verdict: Verdict = judge(result, base, tolerances)
    worst = worst_channel(result, base, tolerances)
    return {
        "weights": name,
        "alpha": alpha,
        "residual": result["residual"],
        "fidelity": result["fidelity"],
        "admissible": verdict.ok,
        "failures": list(verdict.failures),
        "worst_channel": worst.short() if worst is not None else None,
    }


def score_state(ctx: Context, weights: dict[str, Tensor], cfg: FinetuneConfig) -> dict[str, Any]:
    """`score` of a state dict (loaded into a copy of the model)."""
    model = copy.deepcopy(ctx.model)
    model.load_state_dict(weights)
    return score(ctx, model, cfg)


__all__ = [
    "FinetuneResult",
    "admissible",
    "finetune",
    "optimizer_step",
    "score",
    "seeded_rollout",
    "trajectory_generators",
]
