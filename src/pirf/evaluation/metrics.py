"""Residual, fidelity, diversity and memorization metrics on physical fields: the reward-hacking guards.

A reward fine-tune that lowers the PDE residual can do it by leaving the data distribution: shrinking
amplitudes, smoothing away small scales, collapsing onto a few samples, blurring Darcy's two-phase
permeability or copying training fields (the failure modes the PIRF paper, Yuan et al. 2025, guards
against with its weight regularization). Each function here measures one of these against a held-out
reference set of the same PDE.

Conventions:
- input: numpy arrays or torch tensors ``[N, C, H, W]`` in physical units (any device; they are
  read in batches of ``batch_size`` samples and converted to float64 numpy, so memory stays
  bounded by a batch plus the metric's own state);
- output: plain floats and dicts. Per-channel results are keyed by channel name (``pde.fields``
  where a PDE is given, else ``c0, c1, ...``) and the aggregate over channels by ``"all"``;
- "standardized" means per channel ``(x - mean_ref) / std_ref`` with the reference's (or for
  memorization the training set's) channel moments over all samples and pixels; distances are
  RMS per pixel, ``||x - y||_2 / sqrt(C H W)``, so they read in reference-std units at any
  resolution.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from pirf.data import ResidualAccumulator
from pirf.errors import ConfigError, NonFiniteError, ShapeError
from pirf.pdes.base import PDE
from pirf.pdes.darcy import Darcy

Fields = np.ndarray | Tensor
AGGREGATE = "all"
OFF_PHASE_TOLERANCE = 0.1  # a pixel is off-phase if farther than this x (a_high - a_low) from both phases


# -- input handling ------------------------------------------------------------------------------
def _check(x: Fields, what: str, pde: PDE | None) -> None:
    if pde is not None:
        pde.check_fields(x, what)
    elif len(x.shape) != 4:
        raise ShapeError(
            f"{what} have shape {tuple(x.shape)}, expected [N, C, H, W]", "add the missing batch/channel dims"
        )
    if x.shape[0] == 0:
        raise ShapeError(f"{what} are empty", "pass at least one sample")


def _check_pair(samples: Fields, reference: Fields, pde: PDE | None) -> None:
    _check(samples, "samples", pde)
    _check(reference, "reference", pde)
    if tuple(samples.shape[1:]) != tuple(reference.shape[1:]):
        raise ShapeError(
            f"samples {tuple(samples.shape)} and reference {tuple(reference.shape)} differ in [C, H, W]",
            "compare fields of the same PDE at the same resolution",
        )


def _to_numpy(x: Fields) -> np.ndarray:
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


def _batches(x: Fields, batch_size: int) -> Iterator[np.ndarray]:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, x.shape[0], batch_size):
        yield _to_numpy(x[start : start + batch_size])


def _take(x: Fields, index: np.ndarray) -> np.ndarray:
    return _to_numpy(x[torch.as_tensor(index, device=x.device)] if isinstance(x, Tensor) else x[index])


def _names(x: Fields, pde: PDE | None) -> tuple[str, ...]:
    return tuple(pde.fields) if pde is not None else tuple(f"c{i}" for i in range(x.shape[1]))


def _per_channel(names: Sequence[str], values: Sequence[float], aggregate: float | None = None) -> dict:
    out = {name: float(v) for name, v in zip(names, values, strict=True)}
    out[AGGREGATE] = float(np.mean(values)) if aggregate is None else float(aggregate)
    return out


# -- 1. residual statistics ----------------------------------------------------------------------
def residual_summary(pde: PDE, samples: Fields, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """Mean and median over samples of the per-sample residual MSE and MAE, per region (float64).

    ``{region: {mean_mse, median_mse, mean_mae, median_mae}}`` with regions ``all`` plus
    ``pde.regions`` (interior, boundary, Darcy's interface): the same statistics as a data
    file's ``floor``, computed in batches of ``batch_size`` samples.
    """
    _check(samples, "samples", pde)
    acc = ResidualAccumulator(pde)
    for batch in _batches(samples, batch_size):
        acc.add(batch)
    return acc.summary()


def relative_to_floor(
    summary: dict[str, dict[str, float]], floor: dict[str, dict[str, float]], stat: str = "median_mse"
) -> dict[str, float]:
    """``summary[region][stat] / floor[region][stat]`` for each region present in both.

    A floor at round-off level (a boundary condition the solver meets exactly) is raised to
    1e-10 x the all-pixel floor, as `pirf.data.CheckReport.ratios` does, so float32 round-off
    does not read as a huge ratio. Ratio < 1 in a region means "better than the data there".
    """
    all_floor = floor.get("all", {}).get(stat, 0.0)
    out = {}
    for part, stats in summary.items():
        ref = floor.get(part, {}).get(stat)
        if ref is not None and stat in stats:
            out[part] = stats[stat] / max(ref, 1e-10 * all_floor, 1e-300)
    return out


# -- 2. data fidelity ----------------------------------------------------------------------------
def channel_moments(x: Fields, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, amplitude), each ``[C]``: moments over all samples and pixels, and the mean over
    samples of max|x| per channel. Streaming, with Chan's pairwise update of the variance."""
    n = 0
    mean = m2 = amplitude = 0.0
    for b in _batches(x, batch_size):
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
    _check_pair(samples, reference, pde)
    s, r = channel_moments(samples, batch_size), channel_moments(reference, batch_size)
    errors = {
        "mean_error": np.abs(s[0] - r[0]) / _safe(r[1]),
        "std_error": np.abs(s[1] - r[1]) / _safe(r[1]),
        "amplitude_error": np.abs(s[2] - r[2]) / _safe(r[2]),
    }
    out: dict[str, dict[str, float]] = {}
    for c, name in enumerate(_names(samples, pde)):
        out[name] = {}
        for i, moment in enumerate(("mean", "std", "amplitude")):
            out[name][f"sample_{moment}"] = float(s[i][c])
            out[name][f"reference_{moment}"] = float(r[i][c])
            out[name][f"{moment}_error"] = float(errors[f"{moment}_error"][c])
    out[AGGREGATE] = {key: float(v.mean()) for key, v in errors.items()}
    return out


def _safe(scale: np.ndarray) -> np.ndarray:
    return np.where(scale > 0, scale, 1.0)  # a constant reference channel: absolute error instead


def power_spectrum(x: Fields, batch_size: int = 256) -> np.ndarray:
    """Radially averaged power spectrum ``[C, K]`` of fields ``[N, C, H, W]``.

    Per sample and channel: subtract the spatial mean, ``P(k) = |FFT2(x)(k)|^2 / (H W)^2``
    (so the sum over all modes is the spatial variance), then average over the modes of each
    integer shell ``round(|k|) = 0 .. K-1`` (k in cycles per domain) and over samples. No window
    is applied: non-periodic fields leak power to high k, equally in both compared sets.
    """
    h, w = x.shape[2], x.shape[3]
    shell = np.rint(np.hypot(*np.meshgrid(np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w, indexing="ij")))
    shell = shell.astype(np.int64).ravel()
    counts = np.bincount(shell)
    total = np.zeros((x.shape[1], counts.size))
    for b in _batches(x, batch_size):
        b = b - b.mean(axis=(2, 3), keepdims=True)
        power = (np.abs(np.fft.fft2(b)) ** 2).sum(axis=0).reshape(b.shape[1], -1) / (h * w) ** 2
        for c in range(b.shape[1]):
            total[c] += np.bincount(shell, weights=power[c], minlength=counts.size)
    return total / (x.shape[0] * counts)


def spectrum_error(
    samples: Fields, reference: Fields, *, pde: PDE | None = None, batch_size: int = 256
) -> dict[str, float]:
    """Mean over shells k = 1 .. K-1 of |log10 P_s(k) - log10 P_ref(k)| per channel (dex).

    k = 0 is skipped: the per-sample mean is removed, so it holds no power (the mean is judged by
    `moments`). Powers are floored at 1e-12 x the larger peak of the two spectra before the log.
    0.1 dex is a 26% power mismatch; a 0.5x shrunken copy scores log10(4) = 0.60 on every shell.
    """
    _check_pair(samples, reference, pde)
    ps, pr = power_spectrum(samples, batch_size)[:, 1:], power_spectrum(reference, batch_size)[:, 1:]
    eps = np.maximum(1e-12 * np.maximum(ps.max(axis=1), pr.max(axis=1)), 1e-300)[:, None]
    err = np.abs(np.log10(ps + eps) - np.log10(pr + eps)).mean(axis=1)
    return _per_channel(_names(samples, pde), err)


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
    _check_pair(samples, reference, pde)
    if n_projections < 1:
        raise ConfigError(f"n_projections must be positive, got {n_projections}")
    c, hw = samples.shape[1], samples.shape[2] * samples.shape[3]
    mean, std = channel_moments(reference, batch_size)[:2] if standardize else (np.zeros(c), np.ones(c))
    rng = np.random.default_rng(seed)
    joint, single = _unit_directions(rng, c * hw, n_projections), _unit_directions(rng, hw, c * n_projections)

    def project(x: Fields) -> tuple[np.ndarray, np.ndarray]:  # [N, L] joint, [C, N, L] per channel
        parts = []
        for b in _batches(x, batch_size):
            b = ((b - mean[:, None, None]) / _safe(std)[:, None, None]).reshape(len(b), c, hw)
            per = [b[:, i] @ single[:, i * n_projections : (i + 1) * n_projections] for i in range(c)]
            parts.append((b.reshape(len(b), -1) @ joint, np.stack(per)))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts], axis=1)

    (js, cs), (jr, cr) = project(samples), project(reference)
    sw = [np.mean([wasserstein_1d(cs[i][:, k], cr[i][:, k]) for k in range(n_projections)]) for i in range(c)]
    sw_joint = np.mean([wasserstein_1d(js[:, k], jr[:, k]) for k in range(n_projections)])
    return _per_channel(_names(samples, pde), sw, aggregate=sw_joint)


def phase_share(a: Fields, a_low: float, a_high: float) -> float:
    """Fraction of pixels of a permeability field (any shape) nearer ``a_high`` than ``a_low``."""
    a = _to_numpy(a)
    return float((np.abs(a - a_high) < np.abs(a - a_low)).mean())


def off_phase_fraction(
    a: Fields, a_low: float, a_high: float, tolerance: float = OFF_PHASE_TOLERANCE
) -> float:
    """Fraction of pixels farther than ``tolerance x (a_high - a_low)`` from both phases.

    0 for a two-phase field; a blurred or hedged permeability (values between the phases, the
    cheap way to smooth an interface) makes it positive.
    """
    a = _to_numpy(a)
    gap = tolerance * (a_high - a_low)
    return float(((np.abs(a - a_low) > gap) & (np.abs(a - a_high) > gap)).mean())


def darcy_phases(pde: Darcy, samples: Fields, reference: Fields) -> dict[str, float]:
    """Phase share and off-phase fraction of the ``a`` channel of both sets, and the share error."""
    ia = pde.fields.index("a")
    s, r = samples[:, ia], reference[:, ia]
    out = {
        "sample_share": phase_share(s, pde.a_low, pde.a_high),
        "reference_share": phase_share(r, pde.a_low, pde.a_high),
        "sample_off_phase": off_phase_fraction(s, pde.a_low, pde.a_high),
        "reference_off_phase": off_phase_fraction(r, pde.a_low, pde.a_high),
    }
    out["share_error"] = abs(out["sample_share"] - out["reference_share"])
    return out


# -- 3. diversity --------------------------------------------------------------------------------
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
    scale = _safe(std)[:, None, None]  # the standardization's mean cancels in a difference
    total, per_channel = 0.0, np.zeros(x.shape[1])
    for start in range(0, len(i), batch_size):
        xi, xj = _take(x, i[start : start + batch_size]), _take(x, j[start : start + batch_size])
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
    _check(samples, "samples", pde)
    if max_pairs < 1:
        raise ConfigError(f"max_pairs = {max_pairs}", "use at least 1 pair (default 4096)")
    if reference is not None:
        _check_pair(samples, reference, pde)
    std = channel_moments(samples if reference is None else reference, batch_size)[1]
    joint, per_channel = _mean_pair_distance(samples, std, max_pairs, seed, batch_size)
    out: dict = {"mean_distance": joint}
    if reference is not None:
        ref_joint, ref_channel = _mean_pair_distance(reference, std, max_pairs, seed, batch_size)
        out["reference_mean_distance"] = ref_joint
        out["ratio"] = joint / max(ref_joint, 1e-300)
        ratios = per_channel / np.maximum(ref_channel, 1e-300)
        out["channel_ratio"] = {name: float(r) for name, r in zip(_names(samples, pde), ratios, strict=True)}
    return out


# -- 4. memorization -----------------------------------------------------------------------------
def _flat(b: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((b - mean[:, None, None]) / _safe(std)[:, None, None]).reshape(len(b), -1)


def _nearest(query: np.ndarray, train: Fields, mean, std, batch_size: int, exclude=None) -> np.ndarray:
    """Squared distances ``[q]`` from flat standardized ``query`` rows to their nearest train field;
    ``exclude[i]`` (a train index) is left out for row i (leave-one-out)."""
    best = np.full(len(query), np.inf)
    q2 = (query**2).sum(axis=1)
    for start in range(0, train.shape[0], batch_size):
        t = _flat(_to_numpy(train[start : start + batch_size]), mean, std)
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
    _check_pair(samples, train, pde)
    mean, std = channel_moments(train, batch_size)[:2]
    dim = math.prod(samples.shape[1:])
    out = [_nearest(_flat(b, mean, std), train, mean, std, batch_size) for b in _batches(samples, batch_size)]
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
            _nearest(_flat(_take(train, chunk), mean, std), train, mean, std, batch_size, exclude=chunk)
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


# -- 5. the bundle -------------------------------------------------------------------------------
CHANNEL_TERMS = ("mean", "std", "amplitude", "spectrum", "sliced_wasserstein", "diversity")
"""The fidelity terms `fidelity_report` gives per channel (``channel_terms``); 0 = the data."""


def channel_terms(report: dict, names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Every fidelity term of one channel, for each channel (``names``; default: those of the
    report), from a `fidelity_report` (or its JSON):

    ``{channel: {mean, std, amplitude, spectrum, sliced_wasserstein, diversity}}`` with the
    ``moments`` errors (mean in reference stds, std and amplitude relative), the spectrum error
    (dex), the per-channel sliced W1 and |1 - the channel's diversity ratio|. The composite terms
    average these over channels; a channel that leaves the data while the others improve shows
    here and not there (`pirf.evaluation.guard` judges each channel on them).
    """
    m, div = report["moments"], report["diversity"].get("channel_ratio", {})
    names = [k for k in report["spectrum_error"] if k != AGGREGATE] if names is None else names
    return {
        name: {
            "mean": m[name]["mean_error"],
            "std": m[name]["std_error"],
            "amplitude": m[name]["amplitude_error"],
            "spectrum": report["spectrum_error"][name],
            "sliced_wasserstein": report["sliced_wasserstein"][name],
            "diversity": abs(1.0 - div[name]) if name in div else math.nan,
        }
        for name in names
    }


def fidelity_report(
    pde: PDE,
    samples: Fields,
    reference: Fields,
    *,
    train: Fields | None = None,
    n_projections: int = 128,
    seed: int = 0,
    max_pairs: int = 4096,
    batch_size: int = 256,
) -> dict:
    """Moments, spectrum error, sliced Wasserstein, diversity (and Darcy phases, and memorization
    when ``train`` is given) of ``samples`` against a held-out ``reference``, plus one score.

    ``fidelity_score`` = the unweighted mean of the dimensionless terms in ``score_terms``, each
    0 for a perfect match and growing as the samples leave the data:

    - ``moments``: mean over channels of (mean_error + std_error + amplitude_error) / 3;
    - ``spectrum``: spectrum error averaged over channels (dex);
    - ``sliced_wasserstein``: the joint sliced W1 (reference-std units);
    - ``diversity``: |1 - diversity ratio|;
    - Darcy only, ``phase``: share_error + sample off-phase fraction.

    Held-out data of the same distribution score near 0 (the SW term keeps a small finite-sample
    floor); use it relatively, e.g. "score within 20% of the base model's". Memorization is
    reported but not scored (a copy is perfectly faithful; it is a separate guard).

    Every term is there per channel too (`channel_terms` reads them off this report): the
    averages above hide a channel that leaves the data while another improves (issue 24: a
    Helmholtz fine-tune moved f's spectrum error 0.057 -> 0.938 dex at an unchanged score), so
    the fidelity guard (`pirf.evaluation.guard`) judges the channels one by one as well as the score.
    """
    _check_pair(samples, reference, pde)
    kw = {"pde": pde, "batch_size": batch_size}
    report: dict = {
        "moments": moments(samples, reference, **kw),
        "spectrum_error": spectrum_error(samples, reference, **kw),
        "sliced_wasserstein": sliced_wasserstein(samples, reference, n_projections, seed, **kw),
        "diversity": diversity(samples, reference, max_pairs, seed, **kw),
    }
    terms = {
        "moments": float(np.mean(list(report["moments"][AGGREGATE].values()))),
        "spectrum": report["spectrum_error"][AGGREGATE],
        "sliced_wasserstein": report["sliced_wasserstein"][AGGREGATE],
        "diversity": abs(1.0 - report["diversity"]["ratio"]),
    }
    if isinstance(pde, Darcy):
        report["phases"] = darcy_phases(pde, samples, reference)
        terms["phase"] = report["phases"]["share_error"] + report["phases"]["sample_off_phase"]
    if train is not None:
        report["memorization"] = nearest_neighbour_distance(samples, train, batch_size, seed=seed, pde=pde)
    report["score_terms"] = terms
    report["fidelity_score"] = float(np.mean(list(terms.values())))
    return report
