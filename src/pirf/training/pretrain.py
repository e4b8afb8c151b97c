"""Pretraining of the base model: EDM denoising score matching or flow matching on a data set.

One loop (`pretrain`): sample a batch -> loss -> step -> EMA -> log -> checkpoint, on
`accelerate` (CPU, one GPU, or DDP under ``accelerate launch`` / ``torchrun``). Every random
draw of step s is seeded by (seed, s): the batch order from a per-epoch permutation, the noise
and dropout from a generator seeded per step. A run resumed from its last checkpoint therefore
reproduces the uninterrupted run bit for bit on CPU.

Run folder: ``config.json`` (the resolved config), ``metrics.jsonl`` (one line per log step),
``checkpoints/latest.{safetensors,json}`` (model, EMA, optimizer, step) and, at the end,
``model.{safetensors,json}`` (model and EMA weights only, the file other stages load).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pirf import pdes
from pirf.config import to_dict
from pirf.config.limits import check_limits
from pirf.config.resume import config_changes
from pirf.data import FieldDataset, generate_dataset
from pirf.disk import checkpoint_bytes, require_space, run_space_needed, tensor_bytes
from pirf.errors import ConfigError
from pirf.files import append_jsonl, crash_point
from pirf.locks import output_lock
from pirf.models.backbone import UNetConfig
from pirf.models.checkpoint import load_checkpoint, save_checkpoint
from pirf.models.denoiser import edm_loss, flow_matching_loss
from pirf.models.factory import build_denoiser, describe, from_description, with_guide_path
from pirf.pdes.base import check_seed
from pirf.pdes.plugins import plugin_of
from pirf.rewards import ResidualReward
from pirf.threads import current_threads, follow_recorded
from pirf.training.config import DataConfig, ModelConfig, PretrainConfig
from pirf.training.ema import EMA, ema_beta
from pirf.training.engine import make_accelerator
from pirf.training.faults import BadSteps
from pirf.training.pgdiffusion import check_pg_settings, guide_loss, pg_loss
from pirf.training.pidm import pidm_loss
from pirf.training.progress import progress_bar
from pirf.training.run_folder import open_run_folder, rewind_logs
from pirf.training.schedule import due, learning_rate, set_learning_rate
from pirf.training.state import load_training_state, save_training_state
from pirf.training.steps import guarded_step

PERIODIC_AXES = {"dirichlet": None, "periodic": "xy", "periodic-x": "x"}
COMPILE_MIN_STEPS = 200
"""`torch.compile` costs minutes of warm-up on a CPU, about what 200 eager steps of the CPU base
models take (`benchmarks/architecture_speed.py`): shorter runs (tests, smoke runs) stay eager."""


@dataclass
class PretrainResult:
    run_dir: Path
    steps: int
    final_loss: float
    seconds: float


def unet_config(cfg: ModelConfig, channels: int, resolution: int, boundary: str, guide: bool) -> UNetConfig:
    return UNetConfig(
        channels=channels,
        resolution=resolution,
        base_channels=cfg.base_channels,
        channel_mult=tuple(cfg.channel_mult),
        layers_per_block=cfg.layers_per_block,
        attention_resolutions=tuple(cfg.attention_resolutions),
        dropout=cfg.dropout,
        periodic=PERIODIC_AXES[boundary],
        mid_attention=cfg.mid_attention,
        guide_channels=channels if guide else 0,  # PG-Diffusion's guide path (`pirf.training.pgdiffusion`)
    )


def _step_seed(seed: int, step: int, rank: int = 0) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


class BatchOrder:
    """Sample indices of each step: position p = step * B + b walks through per-epoch
    permutations seeded by (seed, epoch), so any step's batch is known without replaying."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._epoch, self._perm = -1, np.arange(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perm

    def indices(self, step: int) -> np.ndarray:
        positions = step * self.batch_size + np.arange(self.batch_size)
        return np.array([self._permutation(int(p // self.n))[p % self.n] for p in positions])


Physics = Callable[[torch.Tensor], torch.Tensor]
"""PIDM's ``residual_mse(x_phys) -> [B]``, or PG-Diffusion's guide loss ``||R(x')||_2`` of model-space x."""


def _loss(
    model,
    kind: str,
    x0: torch.Tensor,
    cfg: PretrainConfig,
    generator: torch.Generator,
    physics: Physics | None,
    norm,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(loss, PIDM's physics term or None); ``kind`` is the unwrapped model's ("edm" or "flow")."""
    if cfg.physics_guide:  # PG-Diffusion: ``physics`` is the guide's loss
        return pg_loss(model, x0, physics, cfg.guide_dropout, generator, cfg.noise_levels), None
    if physics is not None:
        return pidm_loss(model, x0, physics, norm, cfg.physics_weight, generator, cfg.noise_levels)
    if kind == "edm":
        return edm_loss(model, x0, generator, cfg.noise_levels), None
    levels = cfg.noise_levels  # a flow takes only its log-uniform share (`sample_flow_times`)
    return flow_matching_loss(model, x0, generator, time_sampling=cfg.flow_time_sampling, levels=levels), None


def _kind(model) -> str:
    return describe(model)["kind"]


def _initial_model(cfg: PretrainConfig, dataset: FieldDataset) -> torch.nn.Module:
    """A fresh model from ``cfg.model``, or (``cfg.init``) the EMA weights of a trained one,
    checked to be a model of this data set (PDE, resolution, normalization)."""
    info = dataset.info
    if not cfg.init:
        fields, boundary = len(dataset.pde.fields), dataset.pde.boundary
        unet = unet_config(cfg.model, fields, info.resolution, boundary, cfg.physics_guide)
        torch.manual_seed(cfg.seed)
        conditioning = dataset.pde.conditioning(info.resolution) if cfg.model.conditioning else ()
        return build_denoiser(cfg.model.kind, unet, cfg.model.sigma_data, conditioning, cfg.sigma_max)
    from pirf.models.loading import load_model  # a benchmark name, a run folder or a file

    model, record, _ = load_model(cfg.init)  # its record checked against its weights
    mine = (info.pde.name, info.resolution, info.normalization.to_dict())
    theirs = (record.get("pde"), record.get("resolution"), record.get("normalization"))
    if mine != theirs:
        raise ConfigError(
            f"init model {cfg.init!r} was trained on {theirs[0]} at {theirs[1]} with normalization "
            f"{theirs[2]}, the data set {info.path} is {mine[0]} at {mine[1]} with {mine[2]}",
            "continue a model on the data it was trained on (data.path of its record)",
        )
    if cfg.init_kind and cfg.init_kind != _kind(model):
        model = _as_kind(model, cfg.init_kind)
    model.sigma_max = cfg.sigma_max  # this run's noise range is the model's from now on
    if cfg.physics_guide and _kind(model) == "edm":
        torch.manual_seed(cfg.seed)  # the new guide path's initialization
        model = with_guide_path(model)  # exactly the init model until training moves it
    return model.train()


def _as_kind(model, kind: str):
    """A model of ``kind`` ("edm" or "flow") whose network starts from ``model``'s weights.

    A warm start, not a conversion: EDM's network predicts the preconditioned residual F, a flow
    network the velocity eps - x0, so the outputs differ at first; the features of every layer
    carry over and the new objective retrains the rest (`init_kind` in `PretrainConfig`).
    """
    described = describe(model) | {"kind": kind}
    fresh = from_description(described)
    fresh.backbone.load_state_dict(model.backbone.state_dict())
    return fresh


def _physics(cfg: PretrainConfig, model, dataset: FieldDataset) -> Physics | None:
    guided = bool(model.backbone.config.guide_channels)
    check_pg_settings(cfg.physics_guide, cfg.physics_weight, _kind(model), guided)
    if cfg.physics_guide:
        return guide_loss(dataset.pde, dataset.info.normalization)
    if cfg.physics_weight == 0:
        return None
    if cfg.physics_weight < 0 or _kind(model) != "edm":
        raise ConfigError(
            f"physics_weight = {cfg.physics_weight} for a {_kind(model)} model",
            "PIDM's physics loss needs an EDM model and a weight >= 0",
        )
    return ResidualReward(dataset.pde).residual_mse


def _learning_rate(cfg: PretrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps`` (EDM's lr ramp), then constant, or a cosine decay
    from ``lr`` to ``lr_final * lr`` at the last step (`pirf.training.schedule.learning_rate`):
    lr(s) = lr (f + (1 - f) (1 + cos(pi p)) / 2), p = (s - warmup) / (steps - 1 - warmup)."""
    return learning_rate(
        step,
        lr=cfg.lr,
        schedule=cfg.lr_schedule,
        warmup=cfg.warmup_steps,
        decay_start=cfg.warmup_steps,
        decay_end=cfg.steps - 1,
        final=cfg.lr_final,
    )


def _record(cfg: PretrainConfig, dataset: FieldDataset, model, step: int, seconds: float) -> dict[str, Any]:
    info = dataset.info
    return {
        "stage": "pretrain",
        "pde": info.pde.name,
        "pde_params": info.pde.params(),
        "fields": list(info.pde.fields),
        **({"plugin": plugin} if (plugin := plugin_of(info.pde)) else {}),
        "resolution": info.resolution,
        "normalization": info.normalization.to_dict(),
        "data": {
            "path": str(info.path),
            "n": info.n,
            "seed": info.seed,
            "solver": info.solver,
            "floor": info.floor,
        },
        "model": describe(model),
        "config": to_dict(cfg),
        **({"config_changes": changes} if (changes := config_changes(cfg.out)) else {}),
        "step": step,
        "train_seconds": seconds,
        "threads": current_threads(),  # a resume takes it again (pirf.threads)
    }


def ensure_data(cfg: DataConfig, *, progress: bool = True) -> Path:
    """The training file of ``cfg``, generated first when it is missing and ``cfg.pde`` is set."""
    if not cfg.path:
        raise ConfigError(
            "pretrain: no data set given",
            "pass a data file: -p data.path=path/to/file.h5 (with -p data.pde=NAME it is generated "
            "there when missing), or start from a shipped config: `pirf pretrain darcy`",
        )
    path = Path(cfg.path)
    if path.exists():
        return path
    if cfg.pde is None:
        raise ConfigError(
            f"pretrain: data file {str(path)!r} does not exist",
            "generate it (`pirf data generate`), or set data.pde (e.g. -p data.pde=darcy; `pirf pdes` "
            "lists them) to generate it here",
        )
    pde = pdes.get(cfg.pde, **cfg.params)
    generate_dataset(pde, cfg.n, path, resolution=cfg.resolution, seed=cfg.seed, progress=progress)
    return path


def pretrain(
    cfg: PretrainConfig, *, resume: bool = False, progress: bool = True, allow_change: bool = False
) -> PretrainResult:
    """Train a base model on ``cfg.data``; with ``resume`` continue the run in ``cfg.out`` (with
    ``allow_change``, under settings other than its own, recorded). The run folder is locked for
    the run's life: a second run into it is refused (`pirf.locks`)."""
    with output_lock(cfg.out, "a pretraining run"):
        return _pretrain(cfg, resume=resume, progress=progress, allow_change=allow_change)


def _pretrain(cfg: PretrainConfig, *, resume: bool, progress: bool, allow_change: bool) -> PretrainResult:
    check_limits(cfg)  # a config built in Python has not been through from_dict
    if cfg.data.path and Path(cfg.out).absolute() == Path(cfg.data.path).absolute():
        raise ConfigError(f"out = {cfg.out} is the training data file", "write the run to another folder")
    check_seed(cfg.seed)
    accelerator = make_accelerator()
    with accelerator.main_process_first():
        data_path = ensure_data(cfg.data, progress=progress and accelerator.is_main_process)
    dataset = FieldDataset(data_path)
    model = _initial_model(cfg, dataset)
    kind = _kind(model)  # read once, before accelerate may wrap the model
    physics, norm = _physics(cfg, model, dataset), dataset.info.normalization
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    ema = EMA(model)
    if accelerator.is_main_process:  # two checkpoints during a save, then the exported model and EMA
        need = 2 * checkpoint_bytes(model) + tensor_bytes(ema.state_dict().values()) * 2
        require_space(cfg.out, run_space_needed(cfg.out, need), "pretrain")
    with accelerator.main_process_first():  # the others find the folder ready
        run_dir = Path(cfg.out)
        resuming = open_run_folder(
            run_dir,
            cfg,
            resume=resume,
            allow_change=allow_change,
            counter="step",
            logs=("metrics.jsonl",),
            what="a pretraining run",
            write=accelerator.is_main_process,
        )
    start, seconds, pending, bad = 0, 0.0, [], BadSteps()
    latest = run_dir / "checkpoints" / "latest"
    if resuming:
        record = load_training_state(latest, model, ema, optimizer, "pretrain")
        start, seconds = int(record["step"]), float(record["train_seconds"])
        pending = [torch.tensor(v, dtype=torch.float32) for v in record.get("pending_losses", [])]
        bad = BadSteps(int(record.get("bad_steps", 0)))
        if (note := follow_recorded(record.get("threads"))) and progress and accelerator.is_main_process:
            print(note, flush=True)
        if accelerator.is_main_process:
            rewind_logs(run_dir, ("metrics.jsonl",), "step", start)
    if cfg.compile and cfg.steps - start >= COMPILE_MIN_STEPS:
        compile_network(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    order = BatchOrder(len(dataset), cfg.batch_size, cfg.seed)
    rank, world = accelerator.process_index, accelerator.num_processes
    losses: list[torch.Tensor] = pending  # losses since the last log line (kept across a resume)
    physics_terms: list[torch.Tensor] = []
    t0, last = time.perf_counter(), float("nan")

    def save(step: int) -> None:
        raw = accelerator.unwrap_model(model)
        record = _record(cfg, dataset, raw, step, seconds + time.perf_counter() - t0)
        extra = {"pending_losses": [float(v) for v in losses], "bad_steps": bad.total}
        save_training_state(latest, raw, ema, optimizer, record, extra)

    with progress_bar(progress and accelerator.is_main_process, "pretrain", cfg.steps, start) as bar:
        for step in range(start, cfg.steps):
            crash_point("pretrain.step")
            idx = order.indices(step)[rank::world]
            x0 = torch.stack([dataset[int(i)] for i in idx]).to(accelerator.device)
            generator = torch.Generator(device=accelerator.device).manual_seed(
                _step_seed(cfg.seed, step, rank)
            )
            torch.manual_seed(_step_seed(cfg.seed, step, rank))  # dropout
            set_learning_rate(optimizer, _learning_rate(cfg, step))
            loss, physics_term = _loss(model, kind, x0, cfg, generator, physics, norm)
            stepped, _ = guarded_step(
                optimizer, params, loss, cfg.grad_clip, accelerator, sync="ddp", measure_norm=False
            )
            bad.after_step(stepped, cfg.max_bad_steps, "pretrain", f"step {step}", latest, loss)
            if stepped:
                seen = (step + 1) * cfg.batch_size
                beta = ema_beta(cfg.batch_size, cfg.ema_halflife_samples, seen, cfg.ema_rampup)
                ema.update(accelerator.unwrap_model(model), beta)
                losses.append(loss.detach())
                if physics_term is not None:
                    physics_terms.append(physics_term)
            done = step + 1
            if due(done, cfg.log_every, cfg.steps):
                last = float(torch.stack(losses).mean()) if losses else math.nan
                losses.clear()
                elapsed = time.perf_counter() - t0
                line = {
                    "step": done,
                    "loss": last,
                    "lr": _learning_rate(cfg, step),
                    "samples_per_s": (done - start) * cfg.batch_size / max(elapsed, 1e-9),
                    "bad_steps": bad.total,
                    "seconds": seconds + elapsed,
                }
                if physics_terms:
                    line["physics"] = float(torch.stack(physics_terms).mean())
                    physics_terms.clear()
                if accelerator.is_main_process:
                    append_jsonl(run_dir / "metrics.jsonl", line)
                bar.update(done, loss=last)
            good = bad.consecutive == 0  # no checkpoint of weights a bad step left
            if accelerator.is_main_process and good and due(done, cfg.checkpoint_every, cfg.steps):
                save(done)
    total = seconds + time.perf_counter() - t0
    if accelerator.is_main_process:
        export(latest, run_dir / "model")
    return PretrainResult(run_dir, cfg.steps, last if math.isfinite(last) else float("nan"), total)


def compile_network(model: torch.nn.Module) -> None:
    """Compile the model's U-Net in place with `torch.compile` (TorchInductor; Ansel et al. 2024,
    "PyTorch 2"). ``nn.Module.compile`` keeps the parameter names, so checkpoints are the same
    files as without it. Where compilation fails (no C++ compiler, an unsupported operator) the
    network runs eagerly, as it would uncompiled: ``suppress_errors`` falls back per frame."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    model.backbone.unet.compile()


def export(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a checkpoint's model and EMA weights (no optimizer state) as a loadable model file."""
    tensors, record = load_checkpoint(checkpoint)
    keep = {k: v for k, v in tensors.items() if k.startswith(("model.", "ema."))}
    record = {k: v for k, v in record.items() if k not in ("optimizer", "sha256", "format", "format_version")}
    return save_checkpoint(out, keep, record)


__all__ = ["PretrainResult", "export", "pretrain"]
