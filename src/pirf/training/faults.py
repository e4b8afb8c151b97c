"""Numerical faults in the training loops: a bad step is skipped and counted, a run of them stops.

A step is *bad* when its loss or any gradient is NaN or inf (both loops), or, in fine-tuning,
when the iteration's median residual has run away to more than ``divergence_factor`` times the
base model's (`diverged`): the weights are then wrong though finite, typically after a learning
rate that is too large. A bad step leaves the weights, the optimizer state and the EMA as they
were, and no checkpoint is written after it, so ``checkpoints/latest`` always holds weights from
a good step. More than ``max_bad_steps`` bad steps in a row raise `DivergenceError`, whose
message names that checkpoint and what to change.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import Tensor

from pirf.errors import DivergenceError, PirfError
from pirf.models.checkpoint import read_checkpoint_config


def agreed(ok: bool, accelerator: Accelerator | None) -> bool:
    """``ok`` on every process (one collective): a step is skipped everywhere or nowhere, so the
    processes' weights stay identical and no process waits in a backward pass alone."""
    if accelerator is None or accelerator.num_processes == 1:
        return ok
    votes = accelerator.reduce(torch.tensor([float(ok)], device=accelerator.device), reduction="sum")
    return bool(votes.item() == accelerator.num_processes)


def finite_gradients(params: list[torch.nn.Parameter]) -> bool:
    """Whether every gradient of ``params`` is finite (parameters without a gradient count as finite)."""
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)


def diverged(median_residual: float, base_residual: float | None, factor: float) -> bool:
    """An iteration has diverged when its median residual exceeds ``factor`` x the base model's
    held-out median residual (``factor`` <= 0 or an unknown base turn the check off). NaN is not
    divergence here: a non-finite loss is caught as such."""
    if factor <= 0 or base_residual is None or not math.isfinite(base_residual):
        return False
    return median_residual > factor * base_residual


class BadSteps:
    """The count of skipped steps: in all, and in a row (reset by a good step)."""

    def __init__(self, total: int = 0, consecutive: int = 0) -> None:
        self.total, self.consecutive = total, consecutive

    def record(self, ok: bool) -> None:
        self.consecutive = 0 if ok else self.consecutive + 1
        self.total += 0 if ok else 1

    def after_step(
        self, stepped: bool, limit: int, what: str, where: str, checkpoint: Path, loss: Tensor | float
    ) -> None:
        """Count a guarded step (`pirf.training.steps.guarded_step`) and, if it did not step,
        stop once more than ``limit`` in a row were bad, naming the loss or the gradient."""
        self.record(stepped)
        if not stepped:
            self.stop_if_persistent(limit, what, where, checkpoint, nonfinite_reason(loss))

    def stop_if_persistent(self, limit: int, what: str, where: str, checkpoint: Path, reason: str) -> None:
        """Raise `DivergenceError` once more than ``limit`` steps in a row were bad."""
        if self.consecutive <= limit:
            return
        raise DivergenceError(
            f"{what}: {self.consecutive} bad steps in a row ({reason}) at {where}; "
            f"the last good checkpoint is {last_good(checkpoint)}",
            "lower lr (or raise warm-up), keep grad_clip on, and resume from that checkpoint "
            "(--resume with the new settings in a new --out, or start again)",
        )


def last_good(checkpoint: Path) -> str:
    """``checkpoint`` and the step it holds, or a note that none was written yet."""
    try:
        record = read_checkpoint_config(checkpoint)
    except (PirfError, OSError):
        return "none yet (the run failed before its first checkpoint)"
    step = record.get("iteration", record.get("step"))
    return f"{os.fspath(checkpoint)} ({'iteration' if 'iteration' in record else 'step'} {step})"


def nonfinite_reason(loss: Tensor | float) -> str:
    """Why a step was bad, for the stop message."""
    value = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
    return f"loss {value}" if not math.isfinite(value) else "non-finite gradient"
