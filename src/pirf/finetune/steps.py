"""One optimizer step of the fine-tuning loop, and what the processes share each iteration: the
learning rate, the gradient all-reduce, the gathered logs and the check that every process holds
the same weights.

The network is called 2N - 1 times per rollout, a pattern DDP's reducer (one forward per
backward) does not support; so each process keeps a full replica and the gradients of the
trained parameters are averaged with one all-reduce per iteration (`accelerate`'s ``reduce``).
"""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from pirf.errors import NonFiniteError
from pirf.finetune.config import FinetuneConfig
from pirf.training.faults import agreed, finite_gradients


def learning_rate(cfg: FinetuneConfig, iteration: int) -> float:
    warm = min(1.0, (iteration + 1) / max(1, cfg.warmup_iterations))
    if cfg.lr_schedule == "constant":
        return cfg.lr * warm
    progress = iteration / max(1, cfg.iterations)
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))


def _all_reduce_gradients(accelerator: Accelerator, params: list[nn.Parameter]) -> None:
    if accelerator.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def gathered(accelerator: Accelerator, logs: dict[str, Tensor]) -> dict[str, float]:
    """Per-sample logs of all processes, reduced: the mean of each, and for ``residual_mse`` the
    median too (``reward`` = -mean residual); equal to what one process with the global batch logs."""
    values = {k: accelerator.gather(v.reshape(-1).float().contiguous()) for k, v in logs.items()}
    out = {k: float(v.mean()) for k, v in values.items()}
    if "residual_mse" in values:
        out["reward"] = -out.pop("residual_mse")
        out["residual_mse"] = float(values["residual_mse"].median())
    return out


def weights_checksum(params: list[nn.Parameter]) -> Tensor:
    """A float64 fingerprint of the trained weights (sum and sum of squares)."""
    flat = torch.cat([p.detach().reshape(-1).double() for p in params])
    return torch.stack([flat.sum(), flat.pow(2).sum()])


def check_in_sync(accelerator: Accelerator, params: list[nn.Parameter], iteration: int) -> None:
    """Every process must hold the same weights (same averaged gradients, same optimizer)."""
    if accelerator.num_processes == 1:
        return
    sums = accelerator.gather(weights_checksum(params).reshape(1, 2))
    if not bool((sums == sums[0]).all()):
        raise NonFiniteError(
            f"the {accelerator.num_processes} processes hold different weights at iteration {iteration}",
            "report this as a bug; resume from the last checkpoint on one process",
        )


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


__all__ = ["check_in_sync", "gathered", "learning_rate", "optimizer_step", "weights_checksum"]
