"""When things happen in a training loop: the learning rate of each step (`learning_rate`, the one
schedule pretraining, fine-tuning and the test bed share) and whether a periodic action (a log
line, an evaluation, a checkpoint) is due (`due`).

Stateless, as the loops' seeding is: the rate of step s is a function of s alone, so a resumed
run needs no scheduler state (diffusers' stateful schedulers with a hidden step index needed
several fixes for exactly this).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from pirf.errors import ConfigError

ScheduleKind = Literal["constant", "cosine"]


def learning_rate(
    step: int,
    *,
    lr: float,
    schedule: ScheduleKind,
    decay_end: int,
    warmup: int = 0,
    decay_start: int = 0,
    final: float = 0.0,
) -> float:
    """The learning rate of step ``step`` (0-based): a linear warm-up times a cosine decay.

        lr(s) = lr * ramp(s) * decay(s),     ramp(s) = min(1, (s + 1) / max(1, warmup)),
        decay(s) = 1                                     for "constant" or s < decay_start,
        decay(s) = f + (1 - f) (1 + cos(pi min(1, p))) / 2,  p = (s - a) / max(1, b - a),

    with a = ``decay_start``, b = ``decay_end``, f = ``final`` (the cosine of Loshchilov & Hutter
    2017, SGDR, without restarts; the warm-up is EDM's lr ramp). The loops take it two ways:

    - pretraining decays after its warm-up to ``lr_final`` at the last step: ``warmup = W``,
      ``decay_start = W``, ``decay_end = steps - 1``, ``final = lr_final`` (the ramp is 1 there);
    - fine-tuning's cosine runs from iteration 0 under the warm-up and reaches 0 one iteration
      after the last: ``decay_start = 0``, ``decay_end = iterations``, ``final = 0``; with
      ``warmup = 0`` that is ``torch.optim.lr_scheduler.CosineAnnealingLR`` in closed form (the
      test bed's base training).

    Recorded runs depend on both: the two keep their own formula through these arguments.
    """
    if schedule not in ("constant", "cosine"):
        raise ConfigError(f"lr_schedule {schedule!r}", "use 'constant' or 'cosine'")
    ramp = min(1.0, (step + 1) / max(1, warmup))
    if schedule == "constant" or step < decay_start:
        return lr * ramp
    progress = (step - decay_start) / max(1, decay_end - decay_start)
    return lr * ramp * (final + (1 - final) * (1 + math.cos(math.pi * min(1.0, progress))) / 2)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group of ``optimizer`` the rate ``lr`` (before its step)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def due(done: int, every: int, total: int) -> bool:
    """Whether a periodic action is due after ``done`` steps: every ``every`` steps and at the end."""
    return done % every == 0 or done == total


__all__ = ["ScheduleKind", "due", "learning_rate", "set_learning_rate"]
