"""The `accelerate` engine every training loop runs on."""

from __future__ import annotations

import torch
from accelerate import Accelerator


def make_accelerator() -> Accelerator:
    """An `Accelerator` for this launch: one GPU or several (``accelerate launch`` / ``torchrun``)
    where CUDA exists; else the CPU, with several processes joined over gloo (accelerate's
    MULTI_CPU needs ``cpu=True`` to see a torchrun launch on a machine without a GPU)."""
    return Accelerator(cpu=not torch.cuda.is_available())


__all__ = ["make_accelerator"]
