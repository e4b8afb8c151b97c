"""Training state as flat tensors (for safetensors) plus a JSON part (for the checkpoint record).

Optimizer state (Adam's moments and step counts) is flattened to ``optim.{param}.{key}``
tensors; its hyperparameters (param groups) go to JSON. Nothing is pickled.
"""

from __future__ import annotations

from typing import Any

import torch

from pirf.errors import DataFileError


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
