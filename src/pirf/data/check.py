"""Checking pirf data files: non-finite samples (`find_nonfinite`), residual statistics per
region (`ResidualAccumulator`, the ``floor`` a file records at generation) and the check of a
file's samples against that floor (`check_dataset`, `CheckReport`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pirf import pdes
from pirf.data.read import DatasetInfo, iter_chunks, read_info
from pirf.errors import ConfigError


class ResidualAccumulator:
    """Collects per-sample residual MSE/MAE per region; summarizes them as mean and median.

    Fields are scored after `PDE.project` (Darcy: the coefficient on its two phases), as the
    reward and PIRF score them; solver output is already projected, so floors are unchanged."""

    def __init__(self, pde: pdes.PDE) -> None:
        self.pde = pde
        self.values: dict[str, dict[str, list[np.ndarray]]] = {}

    def add(self, fields: np.ndarray) -> None:
        import torch

        with torch.no_grad():
            x = self.pde.project(torch.from_numpy(np.asarray(fields, np.float64)))
            stats = self.pde.residual_stats(x)
        for part, metrics in stats.items():
            for metric, value in metrics.items():
                self.values.setdefault(part, {}).setdefault(metric, []).append(value.numpy())

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for part, metrics in self.values.items():
            out[part] = {}
            for metric, chunks in metrics.items():
                v = np.concatenate(chunks)
                out[part][f"mean_{metric}"] = float(v.mean())
                out[part][f"median_{metric}"] = float(np.median(v))
        return out


OUTLIER_FACTOR = 100.0
"""A sample whose peak-to-peak range in a channel exceeds this x the data set's median range there
is an outlier: a corrupted value (3e38, a sample scaled x1000) rather than physics."""


def sample_ranges(fields: np.ndarray) -> np.ndarray:
    """Peak-to-peak range of every sample's channels, ``[N, C]`` (float64, so 3e38 does not overflow)."""
    x = np.asarray(fields, dtype=np.float64)
    return x.max(axis=(2, 3)) - x.min(axis=(2, 3))


def outliers(ranges: np.ndarray, factor: float = OUTLIER_FACTOR) -> list[tuple[int, int, float]]:
    """(sample, channel, range / median range) of every sample range beyond ``factor`` x its
    channel's median over the set (`sample_ranges`); a channel constant in most samples has no
    median range to compare with and is skipped."""
    found = []
    median = np.median(ranges, axis=0)
    for c, typical in enumerate(median):
        if typical > 0:
            for i in np.nonzero(ranges[:, c] > factor * typical)[0]:
                found.append((int(i), c, float(ranges[i, c] / typical)))
    return sorted(found)


def find_outliers(path: str | os.PathLike, chunk: int = 256) -> list[tuple[int, int, float]]:
    """`outliers` of a data file's finite samples, read in chunks (non-finite ones: `find_nonfinite`)."""
    ranges = [sample_ranges(np.where(np.isfinite(x), x, 0.0)) for _, x in iter_chunks(path, chunk)]
    return outliers(np.concatenate(ranges)) if ranges else []


def describe_outliers(found: list[tuple[int, int, float]], fields: tuple[str, ...]) -> str:
    """``sample 3 (u: 1000x the median range), ...`` for messages (the first five)."""
    shown = ", ".join(f"sample {i} ({fields[c]}: {ratio:.3g}x the median range)" for i, c, ratio in found[:5])
    return shown + (f" and {len(found) - 5} more" if len(found) > 5 else "")


def find_nonfinite(path: str | os.PathLike, chunk: int = 256) -> list[int]:
    """Indices of samples with NaN or inf."""
    bad: list[int] = []
    for start, x in iter_chunks(path, chunk):
        bad.extend(int(i) + start for i in np.nonzero(~np.isfinite(x).all(axis=(1, 2, 3)))[0])
    return bad


@dataclass(frozen=True)
class CheckReport:
    """Residual statistics of a file's samples next to the floor they should sit at."""

    info: DatasetInfo
    checked: int
    nonfinite: list[int]
    residual: dict[str, dict[str, float]]
    floor: dict[str, dict[str, float]]
    floor_source: str
    tolerance: float
    outliers: tuple[tuple[int, int, float], ...] = ()  # (sample, channel, range ratio), `find_outliers`

    def ratios(self) -> dict[str, float]:
        """Median MSE of the checked samples over the floor's median MSE, per region.

        A region whose floor is at round-off level (a boundary condition the solver meets
        exactly) is compared with 1e-10 x the all-pixel floor instead, so float32 round-off in
        a user's data is not flagged.
        """
        all_floor = self.floor.get("all", {}).get("median_mse", 0.0)
        out = {}
        for part, stats in self.residual.items():
            ref = self.floor.get(part, {}).get("median_mse")
            if ref is not None:
                out[part] = stats["median_mse"] / max(ref, 1e-10 * all_floor, 1e-300)
        return out

    @property
    def ok(self) -> bool:
        """No non-finite or outlier sample, and every region's median residual within ``tolerance``
        x floor."""
        return (
            not self.nonfinite
            and not self.outliers
            and self.checked > 0
            and all(r <= self.tolerance for r in self.ratios().values())
        )


def check_dataset(
    path: str | os.PathLike, *, max_samples: int = 1024, tolerance: float = 10.0, reference_samples: int = 32
) -> CheckReport:
    """Score up to ``max_samples`` samples with the PDE's residual and compare to the floor.

    The floor is the one recorded at generation; a file without one (data brought by a user)
    is compared with ``reference_samples`` freshly solved samples of the same PDE and resolution.
    Every sample is also screened for NaN/inf and for outlier values (`find_outliers`), which a
    median residual would not notice.
    """
    _check_check_settings(max_samples, tolerance, reference_samples)
    info = read_info(path)
    nonfinite = find_nonfinite(path)
    acc = ResidualAccumulator(info.pde)
    checked = 0
    for _, x in iter_chunks(path):
        if checked >= max_samples:
            break
        x = x[: max_samples - checked]
        keep = np.isfinite(x).all(axis=(1, 2, 3))
        if keep.any():
            acc.add(x[keep])
        checked += int(keep.sum())
    if info.floor:
        floor, source = info.floor, "recorded at generation"
    else:
        ref = ResidualAccumulator(info.pde)
        ref.add(info.pde.generate(reference_samples, info.resolution, seed=12345))
        floor, source = ref.summary(), f"{reference_samples} freshly solved reference samples"
    residual = acc.summary() if checked else {}
    found = tuple(find_outliers(path))
    return CheckReport(info, checked, nonfinite, residual, floor, source, tolerance, found)


def _check_check_settings(max_samples: int, tolerance: float, reference_samples: int) -> None:
    """Refuse settings under which `check_dataset` would score nothing or compare with nothing."""
    for name, value in (("--n", max_samples), ("reference_samples", reference_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}", f"pass {name} 1 or more")
    if not tolerance > 0:  # NaN too
        raise ConfigError(
            f"--tolerance must be a positive ratio, got {tolerance!r}", "pass e.g. --tolerance 10"
        )


__all__ = [
    "OUTLIER_FACTOR",
    "CheckReport",
    "ResidualAccumulator",
    "check_dataset",
    "describe_outliers",
    "find_nonfinite",
    "find_outliers",
    "outliers",
    "sample_ranges",
]
