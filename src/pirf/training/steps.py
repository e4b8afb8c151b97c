"""The guarded optimizer step every training loop takes (`guarded_step`): pretraining, fine-tuning
and the test bed.

    zero the gradients -> loss finite on every process? -> backward (and average the gradients
    over processes) -> every gradient finite on every process? -> clip -> step

A step whose loss or gradient is NaN or inf on any process changes nothing anywhere (weights,
optimizer state) and reports ``stepped = False``; the loop counts it (`pirf.training.faults`).

What differs between the loops, for a reason, is how the processes' gradients become one
(``sync``):

- ``"ddp"`` (pretraining): the model is wrapped in DDP by `accelerate`; ``accelerator.backward``
  averages the gradients inside the backward pass, bucket by bucket, overlapped with it. DDP's
  reducer supports one forward per backward, which a denoising loss is.
- ``"all-reduce"`` (fine-tuning, the test bed): a rollout calls the network 2K - 1 times before
  one backward, which DDP's reducer does not support; each process keeps a replica and the
  trained parameters' gradients are averaged with one explicit all-reduce after the backward
  (`all_reduce_gradients`). With no accelerator (or one process) it is a plain backward.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from pirf.errors import ConfigError
from pirf.training.faults import agreed, finite_gradients

Sync = Literal["ddp", "all-reduce"]


class StepOutcome(NamedTuple):
    """What a guarded step did: whether it stepped, and the gradient norm ||g||_2 of the trained
    parameters before clipping (NaN when it did not step or was not measured)."""

    stepped: bool
    grad_norm: float


def guarded_step(
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    loss: Tensor,
    clip: float,
    accelerator: Accelerator | None = None,
    *,
    sync: Sync = "all-reduce",
    measure_norm: bool = True,
) -> StepOutcome:
    """One step on ``loss`` over ``params`` (the trained parameters): backward, average the
    gradients over processes as ``sync`` says (module docstring), skip the step everywhere if any
    process has a non-finite loss or gradient, clip the norm to ``clip`` (0: no clip), step.
    ``measure_norm`` False skips the pass over the gradients that measures their norm (pretraining
    does not log it)."""
    if sync == "ddp" and accelerator is None:
        raise ConfigError("guarded_step(sync='ddp') without an accelerator", "pass the run's Accelerator")
    optimizer.zero_grad(set_to_none=True)
    if not agreed(bool(torch.isfinite(loss)), accelerator):
        return StepOutcome(False, math.nan)
    _backward(loss, params, accelerator, sync)
    if not agreed(finite_gradients(params), accelerator):
        optimizer.zero_grad(set_to_none=True)
        return StepOutcome(False, math.nan)
    norm = gradient_norm(params) if measure_norm else math.nan
    if clip > 0:
        _clip(params, clip, accelerator, sync)
    optimizer.step()
    return StepOutcome(True, norm)


def _backward(loss: Tensor, params: list[nn.Parameter], accelerator: Accelerator | None, sync: Sync) -> None:
    if sync == "ddp":
        accelerator.backward(loss)  # DDP averages the gradients in the backward pass
        return
    loss.backward()
    if accelerator is not None:
        all_reduce_gradients(accelerator, params)


def _clip(params: list[nn.Parameter], clip: float, accelerator: Accelerator | None, sync: Sync) -> None:
    if sync == "ddp":
        accelerator.clip_grad_norm_(params, clip)  # unscales first where accelerate scales the loss
    else:
        torch.nn.utils.clip_grad_norm_(params, clip)


def all_reduce_gradients(accelerator: Accelerator, params: list[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the processes with one all-reduce of their
    concatenation (a parameter without a gradient contributes zeros)."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def gradient_norm(params: list[nn.Parameter]) -> float:
    """||g||_2 over every gradient of ``params`` (0 when none has one)."""
    grads = [p.grad.reshape(-1) for p in params if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


__all__ = ["StepOutcome", "Sync", "all_reduce_gradients", "gradient_norm", "guarded_step"]
