"""Input handling shared by the metrics (`pirf.evaluation.metrics`): shape checks, float64 numpy
batches of fields given as numpy arrays or torch tensors, finite rows, channel names and the
per-channel result dicts (keyed by channel name, the aggregate under `AGGREGATE`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from pirf.errors import ConfigError, NonFiniteError, ShapeError
from pirf.pdes.base import PDE

Fields = np.ndarray | Tensor
AGGREGATE = "all"


def check_set(x: Fields, what: str, pde: PDE | None) -> None:
    """Refuse a set of fields that is not ``[N, C, H, W]`` (of ``pde``, when given) or is empty."""
    if pde is not None:
        pde.check_fields(x, what)
    elif len(x.shape) != 4:
        raise ShapeError(
            f"{what} have shape {tuple(x.shape)}, expected [N, C, H, W]", "add the missing batch/channel dims"
        )
    if x.shape[0] == 0:
        raise ShapeError(f"{what} are empty", "pass at least one sample")


def check_pair(samples: Fields, reference: Fields, pde: PDE | None) -> None:
    """`check_set` both sets, and refuse them if they differ in ``[C, H, W]``."""
    check_set(samples, "samples", pde)
    check_set(reference, "reference", pde)
    if tuple(samples.shape[1:]) != tuple(reference.shape[1:]):
        raise ShapeError(
            f"samples {tuple(samples.shape)} and reference {tuple(reference.shape)} differ in [C, H, W]",
            "compare fields of the same PDE at the same resolution",
        )


def to_numpy(x: Fields) -> np.ndarray:
    """``x`` as float64 numpy; refuses NaN or inf."""
    b = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    b = b.astype(np.float64)
    if not np.isfinite(b).all():
        raise NonFiniteError("fields contain NaN or inf", "drop or repair the non-finite samples first")
    return b


def finite_rows(x: Fields, batch_size: int = 256) -> np.ndarray:
    """Boolean ``[N]``: the samples without NaN or inf, computed ``batch_size`` at a time."""
    if isinstance(x, Tensor):
        return torch.isfinite(x).flatten(1).all(dim=1).cpu().numpy()
    parts = [np.isfinite(x[i : i + batch_size]).all(axis=(1, 2, 3)) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def in_batches(x: Fields, batch_size: int) -> Iterator[np.ndarray]:
    """``x`` in float64 numpy batches of ``batch_size`` samples (`to_numpy`)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, x.shape[0], batch_size):
        yield to_numpy(x[start : start + batch_size])


def take_rows(x: Fields, index: np.ndarray) -> np.ndarray:
    """The samples ``index`` of ``x`` as float64 numpy."""
    return to_numpy(x[torch.as_tensor(index, device=x.device)] if isinstance(x, Tensor) else x[index])


def channel_names(x: Fields, pde: PDE | None) -> tuple[str, ...]:
    """``pde.fields``, or ``c0, c1, ...`` without a PDE."""
    return tuple(pde.fields) if pde is not None else tuple(f"c{i}" for i in range(x.shape[1]))


def by_channel(names: Sequence[str], values: Sequence[float], aggregate: float | None = None) -> dict:
    """``{name: value}`` per channel plus `AGGREGATE`: ``aggregate``, or the mean of ``values``."""
    out = {name: float(v) for name, v in zip(names, values, strict=True)}
    out[AGGREGATE] = float(np.mean(values)) if aggregate is None else float(aggregate)
    return out


def safe_scale(scale: np.ndarray) -> np.ndarray:
    """``scale`` with zeros replaced by 1, to divide by."""
    return np.where(scale > 0, scale, 1.0)  # a constant reference channel: absolute error instead


__all__ = [
    "AGGREGATE",
    "Fields",
    "by_channel",
    "channel_names",
    "check_pair",
    "check_set",
    "finite_rows",
    "in_batches",
    "safe_scale",
    "take_rows",
    "to_numpy",
]
