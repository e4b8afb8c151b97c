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

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pirf import pdes
from pirf.config import to_dict
from pirf.data import FieldDataset, generate_dataset
from pirf.errors import ConfigError, NonFiniteError, OutputExistsError
from pirf.models.backbone import UNetConfig
from pirf.models.checkpoint import checkpoint_paths, load_checkpoint, load_into, save_checkpoint
from pirf.models.denoiser import edm_loss, flow_matching_loss
from pirf.models.factory import build_denoiser, describe, load_denoiser
from pirf.rewards import ResidualReward
from pirf.training.ema import EMA, ema_beta
from pirf.training.engine import make_accelerator
from pirf.training.pidm import pidm_loss
from pirf.training.progress import progress_bar
from pirf.training.state import load_optimizer, optimizer_tensors, prefixed, unprefixed

PERIODIC_AXES = {"dirichlet": None, "periodic": "xy", "periodic-x": "x"}


@dataclass
class DataConfig:
    """The training set: an HDF5 file at ``path``; when it is missing and ``pde`` is given it is
    generated first (``n`` samples, ``seed``, ``resolution``, physical ``params``), so one
    command retrains a model from nothing."""

    path: str = ""
    pde: str | None = None
    n: int = 5000
    seed: int = 0
    resolution: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """The base model: ``kind`` "edm" (denoiser) or "flow" (rectified flow), and its U-Net."""

    kind: Literal["edm", "flow"] = "edm"
    sigma_data: float = 1.0  # pirf data are standardized per channel: unit variance
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    layers_per_block: int = 1
    attention_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    mid_attention: bool = True


@dataclass
class PretrainConfig:
    """Everything `pretrain` needs; saved in the run folder and in every checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    out: str = "runs/pretrain"
    model: ModelConfig = field(default_factory=ModelConfig)
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-4
    betas: tuple[float, ...] = (0.9, 0.999)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_halflife_samples: float = 10_000.0
    p_mean: float = -1.2
    p_std: float = 1.2
    flow_time_sampling: Literal["uniform", "logit-normal"] = "uniform"
    init: str = ""  # a model to continue from (its EMA weights); its architecture replaces `model`
    physics_weight: float = 0.0  # c > 0: PIDM's loss, EDM + c R(x0_hat)^2 / (2 sigma) (`pirf.training.pidm`)
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 250


@dataclass
class PretrainResult:
    run_dir: Path
    steps: int
    final_loss: float
    seconds: float


def _unet_config(cfg: ModelConfig, channels: int, resolution: int, boundary: str) -> UNetConfig:
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
    if physics is not None:
        return pidm_loss(model, x0, physics, norm, cfg.physics_weight, generator, cfg.p_mean, cfg.p_std)
    if kind == "edm":
        return edm_loss(model, x0, generator, cfg.p_mean, cfg.p_std), None
    return flow_matching_loss(model, x0, generator, time_sampling=cfg.flow_time_sampling), None


def _kind(model) -> str:
    return describe(model)["kind"]


def _initial_model(cfg: PretrainConfig, dataset: FieldDataset) -> torch.nn.Module:
    """A fresh model from ``cfg.model``, or (``cfg.init``) the EMA weights of a trained one,
    checked to be a model of this data set (PDE, resolution, normalization)."""
    info = dataset.info
    if not cfg.init:
        unet = _unet_config(cfg.model, len(dataset.pde.fields), info.resolution, dataset.pde.boundary)
        torch.manual_seed(cfg.seed)
        return build_denoiser(cfg.model.kind, unet, cfg.model.sigma_data)
    from pirf.evaluation.runner import resolve_model  # a benchmark name, a run folder or a file

    model, record = load_denoiser(resolve_model(cfg.init))
    mine = (info.pde.name, info.resolution, info.normalization.to_dict())
    theirs = (record.get("pde"), record.get("resolution"), record.get("normalization"))
    if mine != theirs:
        raise ConfigError(
            f"init model {cfg.init!r} was trained on {theirs[0]} at {theirs[1]} with normalization "
            f"{theirs[2]}, the data set {info.path} is {mine[0]} at {mine[1]} with {mine[2]}",
            "continue a model on the data it was trained on (data.path of its record)",
        )
    return model.train()


def _physics(cfg: PretrainConfig, model, dataset: FieldDataset) -> Physics | None:
    if cfg.physics_weight == 0:
        return None
    if cfg.physics_weight < 0 or _kind(model) != "edm":
        raise ConfigError(
            f"physics_weight = {cfg.physics_weight} for a {_kind(model)} model",
            "PIDM's physics loss needs an EDM model and a weight >= 0",
        )
    return ResidualReward(dataset.pde).residual_mse


def _learning_rate(cfg: PretrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, then constant (EDM's lr ramp)."""
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def _record(cfg: PretrainConfig, dataset: FieldDataset, model, step: int, seconds: float) -> dict[str, Any]:
    info = dataset.info
    return {
        "stage": "pretrain",
        "pde": info.pde.name,
        "pde_params": info.pde.params(),
        "fields": list(info.pde.fields),
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
        "step": step,
        "train_seconds": seconds,
    }


def _prepare_run_dir(cfg: PretrainConfig, resume: bool) -> Path:
    run_dir = Path(cfg.out)
    latest = checkpoint_paths(run_dir / "checkpoints" / "latest")[1]
    if resume:
        return run_dir
    if latest.exists():
        raise OutputExistsError(
            f"{run_dir} already holds a run", "pass --resume to continue it, or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / "config.json.tmp"
    tmp.write_text(json.dumps(to_dict(cfg), indent=1))
    os.replace(tmp, run_dir / "config.json")
    (run_dir / "metrics.jsonl").write_text("")
    return run_dir


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint a run resumes from (they will be redone)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(ln + "\n" for ln in lines))
    os.replace(tmp, path)


def ensure_data(cfg: DataConfig, *, progress: bool = True) -> Path:
    """The training file of ``cfg``, generated first when it is missing and ``cfg.pde`` is set."""
    if not cfg.path:
        raise ConfigError("pretrain: no data set given", "pass a data file: -p data.path=path/to/file.h5")
    path = Path(cfg.path)
    if path.exists():
        return path
    if cfg.pde is None:
        raise ConfigError(
            f"pretrain: data file {str(path)!r} does not exist",
            "generate it (`pirf data generate`) or set data.pde to generate it here",
        )
    pde = pdes.get(cfg.pde, **cfg.params)
    generate_dataset(pde, cfg.n, path, resolution=cfg.resolution, seed=cfg.seed, progress=progress)
    return path


def pretrain(cfg: PretrainConfig, *, resume: bool = False, progress: bool = True) -> PretrainResult:
    """Train a base model on ``cfg.data``; with ``resume`` continue the run in ``cfg.out``."""
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ConfigError("pretrain: steps and batch_size must be positive")
    accelerator = make_accelerator()
    with accelerator.main_process_first():
        data_path = ensure_data(cfg.data, progress=progress and accelerator.is_main_process)
    dataset = FieldDataset(data_path)
    model = _initial_model(cfg, dataset)
    kind = _kind(model)  # read once, before accelerate may wrap the model
    physics, norm = _physics(cfg, model, dataset), dataset.info.normalization
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    ema = EMA(model)
    run_dir = _prepare_run_dir(cfg, resume)
    start, seconds, pending = 0, 0.0, []
    latest = run_dir / "checkpoints" / "latest"
    if resume:
        tensors, record = load_checkpoint(latest, expect={"stage": "pretrain"})
        load_into(model, unprefixed("model", tensors))
        ema.load_state_dict(unprefixed("ema", tensors))
        load_optimizer(optimizer, tensors, record["optimizer"])
        start, seconds = int(record["step"]), float(record["train_seconds"])
        pending = [torch.tensor(v, dtype=torch.float32) for v in record.get("pending_losses", [])]
        _truncate_metrics(run_dir / "metrics.jsonl", start)
    model, optimizer = accelerator.prepare(model, optimizer)
    order = BatchOrder(len(dataset), cfg.batch_size, cfg.seed)
    beta = ema_beta(cfg.batch_size, cfg.ema_halflife_samples)
    rank, world = accelerator.process_index, accelerator.num_processes
    losses: list[torch.Tensor] = pending  # losses since the last log line (kept across a resume)
    physics_terms: list[torch.Tensor] = []
    t0, last = time.perf_counter(), float("nan")

    def save(step: int) -> None:
        raw = accelerator.unwrap_model(model)
        opt_tensors, opt_record = optimizer_tensors(optimizer)
        tensors = {**prefixed("model", raw.state_dict()), **prefixed("ema", ema.state_dict()), **opt_tensors}
        record = _record(cfg, dataset, raw, step, seconds + time.perf_counter() - t0)
        record |= {"optimizer": opt_record, "pending_losses": [float(v) for v in losses]}
        save_checkpoint(latest, tensors, record)

    with progress_bar(progress and accelerator.is_main_process, "pretrain", cfg.steps, start) as bar:
        for step in range(start, cfg.steps):
            idx = order.indices(step)[rank::world]
            x0 = torch.stack([dataset[int(i)] for i in idx]).to(accelerator.device)
            generator = torch.Generator(device=accelerator.device).manual_seed(
                _step_seed(cfg.seed, step, rank)
            )
            torch.manual_seed(_step_seed(cfg.seed, step, rank))  # dropout
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(cfg, step)
            loss, physics_term = _loss(model, kind, x0, cfg, generator, physics, norm)
            if not torch.isfinite(loss):
                raise NonFiniteError(
                    f"pretrain: the loss is {loss.item()} at step {step}",
                    "lower lr, or check the data with `pirf data check`",
                )
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            ema.update(accelerator.unwrap_model(model), beta)
            losses.append(loss.detach())
            if physics_term is not None:
                physics_terms.append(physics_term)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                last = float(torch.stack(losses).mean())
                losses.clear()
                elapsed = time.perf_counter() - t0
                line = {
                    "step": done,
                    "loss": last,
                    "lr": _learning_rate(cfg, step),
                    "samples_per_s": (done - start) * cfg.batch_size / max(elapsed, 1e-9),
                    "seconds": seconds + elapsed,
                }
                if physics_terms:
                    line["physics"] = float(torch.stack(physics_terms).mean())
                    physics_terms.clear()
                if accelerator.is_main_process:
                    with (run_dir / "metrics.jsonl").open("a") as f:
                        f.write(json.dumps(line) + "\n")
                bar.update(done, loss=last)
            if accelerator.is_main_process and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
                save(done)
    total = seconds + time.perf_counter() - t0
    if accelerator.is_main_process:
        export(latest, run_dir / "model")
    return PretrainResult(run_dir, cfg.steps, last if math.isfinite(last) else float("nan"), total)


def export(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a checkpoint's model and EMA weights (no optimizer state) as a loadable model file."""
    tensors, record = load_checkpoint(checkpoint)
    keep = {k: v for k, v in tensors.items() if k.startswith(("model.", "ema."))}
    record = {k: v for k, v in record.items() if k not in ("optimizer", "sha256", "format", "format_version")}
    return save_checkpoint(out, keep, record)


__all__ = ["DataConfig", "ModelConfig", "PretrainConfig", "PretrainResult", "export", "pretrain"]
