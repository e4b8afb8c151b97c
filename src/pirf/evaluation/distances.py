"""Moments, spectra and distances between two sets of fields (conventions: `pirf.evaluation.metrics`):
channel moments and their errors, radially averaged power spectra and their error, the exact 1-D
and the sliced Wasserstein distance, diversity (mean pairwise distance) and memorization
(distance to the nearest training field)."""

from __future__ import annotations

import math

import numpy as np
import torch

from pirf.errors import ConfigError, ShapeError
from pirf.evaluation.fields import (
    AGGREGATE,
    Fields,
    by_channel,
    channel_names,
    check_pair,
    check_set,
    in_batches,
    safe_scale,
    take_rows,
    to_numpy,
)
from pirf.pdes.base import PDE


def channel_moments(x: Fields, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, amplitude), each ``[C]``: moments over all samples and pixels, and the mean over
    samples of max|x| per channel. Streaming, with Chan's pairwise update of the variance."""
    n = 0
    mean = m2 = amplitude = 0.0
    for b in in_batches(x, batch_size):
        k = b.shape[0] * b.shape[2] * b.shape[3]
        b_mean = b.mean(axis=(0, 2, 3))
        b_m2 = ((b - b_mean[:, None, None]) ** 2).sum(axis=(0, 2, 3))
        delta = b_mean - mean
        mean = mean + delta * k / (n + k)
        m2 = m2 + b_m2 + delta**2 * n * k / (n + k)
        n += k
        amplitude = amplitude + np.abs(b).max(axis=(2, 3)).sum(axis=0)
    return mean, np.sqrt(m2 / n), amplitude / x.shape[0]


def moments(
    samples: Fields, reference: Fields, *, pde: PDE | None = None, batch_size: int = 256
) -> dict[str, dict[str, float]]:
    """Per-channel mean, std and amplitude (mean over samples of max|x|) of both sets, and errors.

    ``{channel: {sample_mean, reference_mean, mean_error, sample_std, ..., amplitude_error}}``:
    ``std_error`` and ``amplitude_error`` are relative, |s - r| / r; ``mean_error`` is
    |mean_s - mean_r| / std_r (a zero-mean field has no scale of its own). ``"all"`` holds the
    three errors averaged over channels. A 0.5x shrunken copy has std and amplitude error 0.5.
    """
    check_pair(samples, reference, pde)
    s, r = channel_moments(samples, batch_size), channel_moments(reference, batch_size)
    errors = {
        "mean_error": np.abs(s[0] - r[0]) / safe_scale(r[1]),
        "std_error": np.abs(s[1] - r[1]) / safe_scale(r[1]),
        "amplitude_error": np.abs(s[2] - r[2]) / safe_scale(r[2]),
    }
    out: dict[str, dict[str, float]] = {}
    for c, name in enumerate(channel_names(samples, pde)):
        out[name] = {}
        for i, moment in enumerate(("mean", "std", "amplitude")):
            out[name][f"sample_{moment}"] = float(s[i][c])
            out[name][f"reference_{moment}"] = float(r[i][c])
            out[name][f"{moment}_error"] = float(errors[f"{moment}_error"][c])
    out[AGGREGATE] = {key: float(v.mean()) for key, v in errors.items()}
    return out


def shell_power(x: torch.Tensor, *, center: bool = True) -> torch.Tensor:
    """Power per integer wavenumber shell ``[B, C, K]`` of fields ``[B, C, H, W]`` (differentiable).

    ``P(k) = |FFT2(x)(k)|^2 / (H W)^2`` averaged over the modes of shell ``round(|k|) = k``
    (k in cycles per domain, k = 0 .. K-1), so that the sum over all modes is the spatial mean of
    x^2; ``center`` first subtracts each field's spatial mean (shell 0 then holds no power).
    """
    h, w = x.shape[-2], x.shape[-1]
    ky = torch.fft.fftfreq(h, 1.0 / h, dtype=torch.float64)
    kx = torch.fft.fftfreq(w, 1.0 / w, dtype=torch.float64)
    shell = torch.round(torch.hypot(ky[:, None], kx[None, :])).to(torch.int64).flatten().to(x.device)
    counts = torch.bincount(shell).to(x.dtype)
    if center:
        x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2).flatten(-2) / (h * w) ** 2
    total = torch.zeros(*power.shape[:-1], counts.numel(), dtype=power.dtype, device=power.device)
    return total.index_add(-1, shell, power) / counts


def power_spectrum(x: Fields, batch_size: int = 256) -> np.ndarray:
    """Radially averaged power spectrum ``[C, K]`` of fields ``[N, C, H, W]``: `shell_power`
    (each field's mean removed) averaged over samples, in float64. No window is applied:
    non-periodic fields leak power to high k, equally in both compared sets.
    """
    total = None
    for b in in_batches(x, batch_size):
        power = shell_power(torch.from_numpy(np.asarray(b, dtype=np.float64))).sum(dim=0)
        total = power if total is None else total + power
    return (total / x.shape[0]).numpy()


def spectrum_error(
    samples: Fields, reference: Fields, *, pde: PDE | None = None, batch_size: int = 256
) -> dict[str, float]:
    """Mean over shells k = 1 .. K-1 of |log10 P_s(k) - log10 P_ref(k)| per channel (dex).

    k = 0 is skipped: the per-sample mean is removed, so it holds no power (the mean is judged by
    `moments`). Powers are floored at 1e-12 x the larger peak of the two spectra before the log.
    0.1 dex is a 26% power mismatch; a 0.5x shrunken copy scores log10(4) = 0.60 on every shell.
    """
    check_pair(samples, reference, pde)
    ps, pr = power_spectrum(samples, batch_size)[:, 1:], power_spectrum(reference, batch_size)[:, 1:]
    eps = np.maximum(1e-12 * np.maximum(ps.max(axis=1), pr.max(axis=1)), 1e-300)[:, None]
    err = np.abs(np.log10(ps + eps) - np.log10(pr + eps)).mean(axis=1)
    return by_channel(channel_names(samples, pde), err)


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """Exact W1 between the empirical measures of ``u`` and ``v`` (any sizes): int |F_u - F_v| dx.

    Both are sorted and the step CDFs compared on the merged sorted values; for equal sizes this
    is the mean of |u_(i) - v_(i)| over the sorted pairs, and for unequal sizes it is exact (no
    quantile interpolation needed).
    """
    u, v = np.sort(np.ravel(u)), np.sort(np.ravel(v))
    if u.size == 0 or v.size == 0:
        raise ShapeError("wasserstein_1d needs two non-empty sets of values", "pass at least one value each")
    merged = np.sort(np.concatenate([u, v]))
    cdf_u = np.searchsorted(u, merged[:-1], side="right") / u.size
    cdf_v = np.searchsorted(v, merged[:-1], side="right") / v.size
    return float(np.sum(np.abs(cdf_u - cdf_v) * np.diff(merged)))


def _unit_directions(rng: np.random.Generator, dim: int, n: int) -> np.ndarray:
    d = rng.standard_normal((dim, n))
    return d / np.linalg.norm(d, axis=0, keepdims=True)


def sliced_wasserstein(
    samples: Fields,
    reference: Fields,
    n_projections: int = 128,
    seed: int = 0,
    *,
    standardize: bool = True,
    pde: PDE | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Sliced W1 between the two sets: mean over random unit directions of W1 of the projections.

    Fields are standardized with the reference's channel mean/std (``standardize=True``) and
    flattened. Per channel: directions in R^(H W) on that channel alone; ``"all"``: directions in
    R^(C H W) on all channels jointly. Directions are seeded (``seed``), so two calls compare
    like with like. On standardized fields a projection has variance ~1, so values read in
    reference-std units; two independent sets of the same distribution score O(1/sqrt(N)), not 0.
    """
    check_pair(samples, reference, pde)
    if n_projections < 1:
        raise ConfigError(f"n_projections must be positive, got {n_projections}")
    c, hw = samples.shape[1], samples.shape[2] * samples.shape[3]
    mean, std = channel_moments(reference, batch_size)[:2] if standardize else (np.zeros(c), np.ones(c))
    rng = np.random.default_rng(seed)
    joint, single = _unit_directions(rng, c * hw, n_projections), _unit_directions(rng, hw, c * n_projections)

    def project(x: Fields) -> tuple[np.ndarray, np.ndarray]:  # [N, L] joint, [C, N, L] per channel
        parts = []
        for b in in_batches(x, batch_size):
            b = ((b - mean[:, None, None]) / safe_scale(std)[:, None, None]).reshape(len(b), c, hw)
            per = [b[:, i] @ single[:, i * n_projections : (i + 1) * n_projections] for i in range(c)]
            parts.append((b.reshape(len(b), -1) @ joint, np.stack(per)))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts], axis=1)

    (js, cs), (jr, cr) = project(samples), project(reference)
    sw = [np.mean([wasserstein_1d(cs[i][:, k], cr[i][:, k]) for k in range(n_projections)]) for i in range(c)]
    sw_joint = np.mean([wasserstein_1d(js[:, k], jr[:, k]) for k in range(n_projections)])
    return by_channel(channel_names(samples, pde), sw, aggregate=sw_joint)


# -- diversity -----------------------------------------------------------------------------------
def _pairs(n: int, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n < 2:
        raise ShapeError(f"diversity needs at least 2 samples, got {n}")
    if n * (n - 1) // 2 <= max_pairs:
        return np.triu_indices(n, 1)
    rng = np.random.default_rng(seed)  # seeded: the same pairs on every call
    i = rng.integers(n, size=max_pairs)
    return i, (i + rng.integers(1, n, size=max_pairs)) % n  # j != i


def _mean_pair_distance(
    x: Fields, std: np.ndarray, max_pairs: int, seed: int, batch_size: int
) -> tuple[float, np.ndarray]:
    """Mean over pairs of the standardized RMS distance: over all channels, and per channel ``[C]``."""
    i, j = _pairs(x.shape[0], max_pairs, seed)
    scale = safe_scale(std)[:, None, None]  # the standardization's mean cancels in a difference
    total, per_channel = 0.0, np.zeros(x.shape[1])
    for start in range(0, len(i), batch_size):
        xi, xj = take_rows(x, i[start : start + batch_size]), take_rows(x, j[start : start + batch_size])
        squared = ((xi - xj) / scale) ** 2
        total += np.sqrt(squared.mean(axis=(1, 2, 3))).sum()
        per_channel += np.sqrt(squared.mean(axis=(2, 3))).sum(axis=0)
    return total / len(i), per_channel / len(i)


def diversity(
    samples: Fields,
    reference: Fields | None = None,
    max_pairs: int = 4096,
    seed: int = 0,
    *,
    pde: PDE | None = None,
    batch_size: int = 256,
) -> dict:
    """Mean pairwise RMS distance between samples (standardized), and its ratio to the reference's.

    All pairs when there are at most ``max_pairs``, else ``max_pairs`` seeded random pairs.
    Standardized with the reference's channel moments (the samples' own without a reference).
    ``ratio`` ~ 1: as diverse as the data; ~ 0: collapse onto a few fields. With a reference,
    ``channel_ratio`` holds the same ratio per channel (distances over that channel's pixels), so
    one collapsed channel of several shows even where the joint ratio barely moves.
    """
    check_set(samples, "samples", pde)
    if max_pairs < 1:
        raise ConfigError(f"max_pairs = {max_pairs}", "use at least 1 pair (default 4096)")
    if reference is not None:
        check_pair(samples, reference, pde)
    std = channel_moments(samples if reference is None else reference, batch_size)[1]
    joint, per_channel = _mean_pair_distance(samples, std, max_pairs, seed, batch_size)
    out: dict = {"mean_distance": joint}
    if reference is not None:
        ref_joint, ref_channel = _mean_pair_distance(reference, std, max_pairs, seed, batch_size)
        out["reference_mean_distance"] = ref_joint
        out["ratio"] = joint / max(ref_joint, 1e-300)
        ratios = per_channel / np.maximum(ref_channel, 1e-300)
        out["channel_ratio"] = {
            name: float(r) for name, r in zip(channel_names(samples, pde), ratios, strict=True)
        }
    return out


# -- memorization --------------------------------------------------------------------------------
def _flat(b: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((b - mean[:, None, None]) / safe_scale(std)[:, None, None]).reshape(len(b), -1)


def _nearest(
    query: np.ndarray,
    train: Fields,
    mean: np.ndarray,
    std: np.ndarray,
    batch_size: int,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Squared distances ``[q]`` from flat standardized ``query`` rows to their nearest train field;
    ``exclude[i]`` (a train index) is left out for row i (leave-one-out)."""
    best = np.full(len(query), np.inf)
    q2 = (query**2).sum(axis=1)
    for start in range(0, train.shape[0], batch_size):
        t = _flat(to_numpy(train[start : start + batch_size]), mean, std)
        d2 = np.maximum(q2[:, None] + (t**2).sum(axis=1)[None, :] - 2 * query @ t.T, 0.0)  # batched cdist
        if exclude is not None:
            rows = np.nonzero((exclude >= start) & (exclude < start + len(t)))[0]
            d2[rows, exclude[rows] - start] = np.inf
        best = np.minimum(best, d2.min(axis=1))
    return best


def nearest_neighbour_distances(
    samples: Fields, train: Fields, *, pde: PDE | None = None, batch_size: int = 256
) -> np.ndarray:
    """RMS distance ``[N]`` of each sample to its nearest training field, standardized with the
    training set's channel moments; batched over both sets (memory ~ batch_size^2 + 2 batches)."""
    check_pair(samples, train, pde)
    mean, std = channel_moments(train, batch_size)[:2]
    dim = math.prod(samples.shape[1:])
    out = [
        _nearest(_flat(b, mean, std), train, mean, std, batch_size) for b in in_batches(samples, batch_size)
    ]
    return np.sqrt(np.concatenate(out) / dim)


def nearest_neighbour_distance(
    samples: Fields,
    train: Fields,
    batch_size: int = 256,
    train_subsample: int = 256,
    seed: int = 0,
    *,
    pde: PDE | None = None,
) -> dict[str, float]:
    """Mean and median nearest-training-field distance of the samples, and ``ratio`` to the train
    set's own typical one: mean over ``train_subsample`` seeded training fields of the distance
    to their nearest *other* training field (leave-one-out against the whole train set).

    ``ratio`` ~ 1 for fresh samples of the data distribution; 0 for copies of training fields.
    """
    if train_subsample < 1:
        raise ConfigError(f"train_subsample = {train_subsample}", "use at least 1 (default 256)")
    d = nearest_neighbour_distances(samples, train, pde=pde, batch_size=batch_size)
    n = train.shape[0]
    if n < 2:
        raise ShapeError("the leave-one-out train distance needs at least 2 training fields")
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(train_subsample, n), replace=False))
    mean, std = channel_moments(train, batch_size)[:2]
    train_d2 = np.concatenate(
        [
            _nearest(_flat(take_rows(train, chunk), mean, std), train, mean, std, batch_size, exclude=chunk)
            for chunk in np.array_split(idx, max(1, math.ceil(len(idx) / batch_size)))
        ]
    )
    train_mean = float(np.sqrt(train_d2 / math.prod(train.shape[1:])).mean())
    return {
        "mean": float(d.mean()),
        "median": float(np.median(d)),
        "min": float(d.min()),
        "train_mean": train_mean,
        "ratio": float(d.mean()) / max(train_mean, 1e-300),
    }


__all__ = [
    "channel_moments",
    "diversity",
    "moments",
    "nearest_neighbour_distance",
    "nearest_neighbour_distances",
    "power_spectrum",
    "shell_power",
    "sliced_wasserstein",
    "spectrum_error",
    "wasserstein_1d",
]
