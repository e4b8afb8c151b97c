"""A fine-tuning run's folder and checkpoints: starting or resuming the folder, the state a
checkpoint carries besides tensors (`RunState`), the checkpoint record and restoring from it.

Run folder: ``config.json``, ``metrics.jsonl`` (iteration logs), ``evals.jsonl`` (evaluations),
``checkpoints/latest.*`` (everything to resume), ``checkpoints/best.*`` (early-stopping
weights) and ``model.{safetensors,json}`` (the selected model; loads like a base model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pirf.config import to_dict
from pirf.config.resume import config_changes
from pirf.finetune.config import FinetuneConfig
from pirf.finetune.context import Context
from pirf.models.factory import describe
from pirf.threads import current_threads, follow_recorded
from pirf.training.ema import EMA
from pirf.training.faults import BadSteps
from pirf.training.run_folder import open_run_folder
from pirf.training.state import load_training_state


def prepare_run_dir(cfg: FinetuneConfig, resume: bool, allow_change: bool = False) -> Path:
    """The fine-tuning run's folder, ready to start or resume (main process only;
    `open_run_folder`): logs ``metrics.jsonl`` and ``evals.jsonl``, checkpoints ``latest`` and
    ``best``."""
    run_dir = Path(cfg.out)
    open_run_folder(
        run_dir,
        cfg,
        resume=resume,
        allow_change=allow_change,
        counter="iteration",
        logs=("metrics.jsonl", "evals.jsonl"),
        what="a fine-tuning run",
        also_recover=("best",),
    )
    return run_dir


class RunState:
    """The mutable state a checkpoint carries besides tensors."""

    def __init__(self) -> None:
        self.iteration = 0
        self.bad = BadSteps()
        self.seconds = 0.0
        self.base_score: dict[str, Any] | None = None
        self.base_residual_by_steps: dict[str, float] = {}  # `residuals_by_steps` of the base
        self.best: dict[str, Any] | None = None  # {"iteration", "residual", "fidelity"}

    def to_dict(self) -> dict[str, Any]:
        own = {k: v for k, v in vars(self).items() if k != "bad"}
        return own | {"bad_steps": self.bad.total, "consecutive_bad": self.bad.consecutive}

    def load(self, record: dict[str, Any]) -> None:
        for key in vars(self):
            if key == "base_residual_by_steps":  # absent from runs saved before it was kept
                self.base_residual_by_steps = record.get(key, {})
            elif key != "bad":
                setattr(self, key, record[key])
        self.bad = BadSteps(record["bad_steps"], record["consecutive_bad"])


def run_record(cfg: FinetuneConfig, ctx: Context, iteration: int) -> dict[str, Any]:
    """The checkpoint record: the base model's record (PDE, normalization, data provenance) with
    the fine-tune's config on top, so a fine-tuned model loads wherever its base loads."""
    keep = ("pde", "pde_params", "plugin", "fields", "resolution", "normalization", "data")
    return {k: ctx.record[k] for k in keep if k in ctx.record} | {
        "stage": "finetune",
        "method": cfg.method,
        "model": describe(ctx.model),
        "base": {"spec": cfg.base, "sha256": ctx.record.get("sha256"), "stage": ctx.record.get("stage")},
        "config": to_dict(cfg),
        **({"config_changes": changes} if (changes := config_changes(cfg.out)) else {}),
        "iteration": iteration,
        "threads": current_threads(),  # a resume takes it again (pirf.threads)
    }


def restore(
    latest: Path, model: nn.Module, ema: EMA, optimizer: torch.optim.Optimizer, state: RunState
) -> str | None:
    """Load the run's ``latest`` checkpoint into the model, the EMA, the optimizer and ``state``,
    and compute with the run's recorded thread count (`pirf.threads.follow_recorded`; its note
    for the user is returned)."""
    record = load_training_state(latest, model, ema, optimizer, "finetune")
    state.load(record["state"])
    return follow_recorded(record.get("threads"))


__all__ = ["RunState", "prepare_run_dir", "restore", "run_record"]
