"""Per-channel affine normalization: models see (x - shift) / scale, residuals see physical x.

A data set records its normalization; it travels with every checkpoint trained on it, so a
model's output can always be mapped back to physical units before a residual scores it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from pirf.errors import ConfigError, ShapeError

if TYPE_CHECKING:
    import torch

Array = TypeVar("Array", np.ndarray, "torch.Tensor")


@dataclass(frozen=True)
class Normalization:
    """x_normalized = (x - shift[c]) / scale[c] for each channel c (dim 1 of ``[B, C, H, W]``)."""

    shift: tuple[float, ...]
    scale: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.shift) != len(self.scale):
            raise ConfigError(
                f"normalization has {len(self.shift)} shifts but {len(self.scale)} scales",
                "give one shift and one scale per channel",
            )
        if not all(np.isfinite(self.shift)) or not all(s > 0 and np.isfinite(s) for s in self.scale):
            raise ConfigError(
                f"normalization needs finite shifts and positive finite scales, got {self}",
                "a constant channel has zero spread: set its scale by hand",
            )

    @classmethod
    def identity(cls, channels: int) -> Normalization:
        return cls((0.0,) * channels, (1.0,) * channels)

    @classmethod
    def from_moments(cls, mean: np.ndarray, std: np.ndarray) -> Normalization:
        """Standardization: shift = per-channel mean, scale = per-channel std (1 if std is 0)."""
        scale = np.where(np.asarray(std) > 0, std, 1.0)
        return cls(tuple(float(m) for m in mean), tuple(float(s) for s in scale))

    def _broadcast(self, x: Array, values: tuple[float, ...]) -> Array:
        if x.ndim != 4 or x.shape[1] != len(values):
            raise ShapeError(
                f"normalization of {len(values)} channels applied to shape {tuple(x.shape)}",
                "pass fields shaped [B, C, H, W] with the data set's channel count",
            )
        torch = sys.modules.get("torch")  # x can be a tensor only once torch is loaded
        if torch is not None and isinstance(x, torch.Tensor):
            return torch.tensor(values, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return np.asarray(values, dtype=x.dtype).reshape(1, -1, 1, 1)

    def normalize(self, x: Array) -> Array:
        """Physical -> model space."""
        return (x - self._broadcast(x, self.shift)) / self._broadcast(x, self.scale)

    def denormalize(self, x: Array) -> Array:
        """Model -> physical space."""
        return x * self._broadcast(x, self.scale) + self._broadcast(x, self.shift)

    def to_dict(self) -> dict[str, Any]:
        return {"shift": list(self.shift), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalization:
        try:
            return cls(tuple(float(v) for v in d["shift"]), tuple(float(v) for v in d["scale"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(
                f"malformed normalization record {d!r}", 'expected {"shift": [...], "scale": [...]}'
            ) from err
