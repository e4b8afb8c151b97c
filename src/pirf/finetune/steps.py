"""What the fine-tuning loop's processes share each iteration: the learning rate, the gathered logs
and the check that every process holds the same weights.

The network is called 2N - 1 times per rollout, a pattern DDP's reducer (one forward per
backward) does not support; so each process keeps a full replica and the gradients of the
trained parameters are averaged with one all-reduce per iteration, inside the guarded step every
loop takes (`pirf.training.steps.guarded_step` with ``sync="all-reduce"``).
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from pirf.errors import NonFiniteError
from pirf.finetune.config import FinetuneConfig
from pirf.training.schedule import learning_rate as scheduled_rate


def learning_rate(cfg: FinetuneConfig, iteration: int) -> float:
    """Linear warm-up over ``warmup_iterations`` times, for "cosine", a cosine from ``lr`` at
    iteration 0 toward 0 one iteration after the last (`pirf.training.schedule.learning_rate`):
    lr(i) = lr min(1, (i + 1) / W) (1 + cos(pi i / iterations)) / 2."""
    warmup, end = cfg.warmup_iterations, cfg.iterations
    return scheduled_rate(iteration, lr=cfg.lr, schedule=cfg.lr_schedule, warmup=warmup, decay_end=end)


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


__all__ = ["check_in_sync", "gathered", "learning_rate", "weights_checksum"]
