"""Training state as flat tensors (for safetensors) plus a JSON part (for the checkpoint record).

A training checkpoint (``checkpoints/latest`` of pretraining and fine-tuning alike) holds the
model's weights as ``model.*``, the EMA's as ``ema.*`` and the optimizer state (Adam's moments and
step counts) flattened to ``optim.{param}.{key}`` tensors; the optimizer's hyperparameters (param
groups) go to the record's ``optimizer`` entry, beside what the loop records. Nothing is pickled.
`save_training_state` writes one, `load_training_state` resumes from it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pirf.errors import DataFileError
from pirf.models.checkpoint import load_checkpoint, load_into, save_checkpoint
from pirf.training.ema import EMA


def save_training_state(
    path: str | os.PathLike,
    model: torch.nn.Module,
    ema: EMA,
    optimizer: torch.optim.Optimizer,
    record: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the checkpoint a run resumes from: the model's, the EMA's and the optimizer's tensors,
    and the record ``record | {"optimizer": param groups} | extra`` (in that key order)."""
    opt_tensors, opt_record = optimizer_tensors(optimizer)
    tensors = {**prefixed("model", model.state_dict()), **prefixed("ema", ema.state_dict()), **opt_tensors}
    return save_checkpoint(path, tensors, {**record, "optimizer": opt_record, **(extra or {})})


def load_training_state(
    path: str | os.PathLike,
    model: torch.nn.Module,
    ema: EMA,
    optimizer: torch.optim.Optimizer,
    stage: str,
) -> dict[str, Any]:
    """Load what `save_training_state` wrote into the model, the EMA and the optimizer, after
    checking the record's ``stage`` ("pretrain", "finetune"); returns the record."""
    tensors, record = load_checkpoint(path, expect={"stage": stage})
    load_into(model, unprefixed("model", tensors))
    ema.load_state_dict(unprefixed("ema", tensors))
    load_optimizer(optimizer, tensors, record["optimizer"])
    return record


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON record) of an optimizer's state."""
    state = optimizer.state_dict()
    tensors = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
    return tensors, {"param_groups": state["param_groups"]}


def load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], record: dict[str, Any]
) -> None:
    """Restore what `optimizer_tensors` saved."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": record["param_groups"]})
    except (KeyError, ValueError) as err:
        raise DataFileError(
            f"the checkpoint's optimizer state does not fit ({err})",
            "resume with the configuration the run was started with",
        ) from None


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
