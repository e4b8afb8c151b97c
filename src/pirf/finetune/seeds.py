"""Seeded rollout inputs of the fine-tuning loop: which trajectories a process runs, the noise
they start from, and how per-row values of several processes are put back in trajectory order.

Trajectory j of iteration i starts from noise seeded by (seed, i, j), whatever process runs it,
so a resumed run, or one spread over P processes (each takes j = rank, rank + P, ...), makes the
same rollouts as one uninterrupted process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor

from pirf.finetune.methods import Rollout
from pirf.sampling import per_sample_noise


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


def iteration_steps(seed: int, iteration: int, choices: tuple[int, ...]) -> int:
    """The chain's step count of one iteration, drawn from ``choices`` by (seed, iteration) on a
    stream of its own (the window and LV draws of `iteration_rng` stay as they were)."""
    return int(np.random.default_rng([seed, iteration, 2**31 - 2]).choice(np.asarray(choices)))


def local_rows(batch_size: int, world: int, rank: int, group_size: int) -> list[int]:
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


def gather_rows(accelerator: Accelerator, rows: list[int]) -> Callable[[Tensor], Tensor] | None:
    """Per-row values of all processes in trajectory order (None on one process)."""
    if accelerator.num_processes == 1:
        return None
    index = torch.tensor(rows, device=accelerator.device)

    def gather(values: Tensor) -> Tensor:
        every, where = accelerator.gather(values.contiguous()), accelerator.gather(index)
        return torch.empty_like(every).index_copy_(0, where, every)

    return gather


__all__ = ["gather_rows", "iteration_rng", "local_rows", "seeded_rollout", "trajectory_generators"]
