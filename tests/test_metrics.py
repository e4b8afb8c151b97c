"""Evaluation metrics: exact values on constructed fields, agreement with scipy and brute force,
held-out data against perturbed data (noise, blur, shift, shrink, collapse, copies), batching
invariance, and the errors on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

import pirf.pdes as pdes
from pirf import data
from pirf import evaluation as m
from pirf.errors import ConfigError, NonFiniteError, ShapeError

R = 16
LOC = np.array([0.5, -2.0])
SCALE = np.array([1.0, 3.0])


def smooth_fields(n: int, seed: int, c: int = 2, r: int = R) -> np.ndarray:
    """Periodic Gaussian random fields ``[n, c, r, r]`` with a decaying spectrum, per-channel
    offset ``LOC`` and scale ``SCALE``: a cheap stand-in for a data distribution."""
    w = np.random.default_rng(seed).standard_normal((n, c, r, r))
    k = np.fft.fftfreq(r) * r
    filt = 1.0 / (1.0 + k[:, None] ** 2 + k[None, :] ** 2)
    x = np.fft.ifft2(np.fft.fft2(w) * filt).real
    return x * SCALE[:c, None, None] + LOC[:c, None, None]


def blur(x: np.ndarray) -> np.ndarray:
    """Periodic 3x3 box blur: removes small scales."""
    return sum(np.roll(x, (i, j), axis=(2, 3)) for i in (-1, 0, 1) for j in (-1, 0, 1)) / 9.0


def shell_counts(h: int, w: int) -> np.ndarray:
    """Number of integer wavevectors (cycles per domain) in each shell round(|k|), by brute force."""
    ky = [k if k < h - h // 2 else k - h for k in range(h)]
    kx = [k if k < w - w // 2 else k - w for k in range(w)]
    shells = [round(math.hypot(a, b)) for a in ky for b in kx]
    return np.bincount(shells)


@pytest.fixture(scope="module")
def fields():
    """Reference, held-out and train splits of the synthetic distribution."""
    return {"ref": smooth_fields(300, 0), "held": smooth_fields(300, 1), "train": smooth_fields(120, 2)}


@pytest.fixture(scope="module")
def poisson():
    pde = pdes.get("poisson")
    return pde, pde.generate(128, R, seed=0), pde.generate(128, R, seed=1)


@pytest.fixture(scope="module")
def darcy():
    pde = pdes.get("darcy")
    return pde, pde.generate(64, R, seed=0), pde.generate(64, R, seed=1)


@pytest.fixture(scope="module")
def poisson_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("metrics") / "poisson.h5"
    return data.generate_dataset(pdes.get("poisson"), 16, path, resolution=R, seed=4, progress=False)


# -- wasserstein_1d ------------------------------------------------------------------------------
@pytest.mark.parametrize(("n_u", "n_v"), [(200, 200), (150, 321), (7, 1)])
def test_wasserstein_1d_matches_scipy(n_u, n_v):
    rng = np.random.default_rng(n_u + n_v)
    u, v = rng.standard_normal(n_u), 0.3 + 2.0 * rng.standard_exponential(n_v)
    assert m.wasserstein_1d(u, v) == pytest.approx(scipy.stats.wasserstein_distance(u, v), rel=1e-10)
    assert m.wasserstein_1d(v, u) == pytest.approx(m.wasserstein_1d(u, v), rel=1e-12)
    ties_u, ties_v = rng.integers(0, 5, n_u).astype(float), rng.integers(1, 7, n_v).astype(float)
    assert m.wasserstein_1d(ties_u, ties_v) == pytest.approx(
        scipy.stats.wasserstein_distance(ties_u, ties_v), rel=1e-10, abs=1e-12
    )


def test_wasserstein_1d_equal_sizes_is_mean_sorted_gap_and_shift():
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(500), rng.standard_normal(500)
    assert m.wasserstein_1d(u, v) == pytest.approx(np.abs(np.sort(u) - np.sort(v)).mean(), rel=1e-10)
    assert m.wasserstein_1d(u, u[::-1]) == 0.0
    assert m.wasserstein_1d(u, u + 1.7) == pytest.approx(1.7, rel=1e-10)  # a translation moves by |m|
    assert m.wasserstein_1d(u.reshape(20, 25), v) == pytest.approx(m.wasserstein_1d(u, v))  # any shape
    a = rng.standard_normal(5000)
    for shift in (0.5, 2.0, -3.0):
        b = shift + rng.standard_normal(5000)
        assert m.wasserstein_1d(a, b) == pytest.approx(abs(shift), abs=0.06)


# -- sliced Wasserstein --------------------------------------------------------------------------
def test_sliced_wasserstein_same_distribution_is_small_and_grows_linearly_with_shift(fields):
    ref, held = fields["ref"], fields["held"]
    floor = m.sliced_wasserstein(held, ref)
    assert set(floor) == {"c0", "c1", "all"}
    assert all(0 < v < 0.15 for v in floor.values())  # O(1/sqrt(N)) finite-sample floor, not 0
    std = ref.std(axis=(0, 2, 3))[:, None, None]
    shifted = {s: m.sliced_wasserstein(held + s * std, ref) for s in (0.5, 2, 4)}
    assert floor["all"] < shifted[0.5]["all"] < shifted[2]["all"] < shifted[4]["all"]
    # far from the floor the growth is linear in the shift
    assert shifted[4]["all"] / shifted[2]["all"] == pytest.approx(2.0, rel=0.1)


def test_sliced_wasserstein_exact_for_a_translated_copy(fields):
    """A translated copy moves every projection by |shift . d|: exactly linear in the shift, and of
    size ~ shift x E|N(0, 1)| = 0.8 shift (standardized units, random unit directions)."""
    ref = fields["ref"]
    std = ref.std(axis=(0, 2, 3))[:, None, None]
    one = m.sliced_wasserstein(ref + 1.0 * std, ref)
    three = m.sliced_wasserstein(ref + 3.0 * std, ref)
    for key in one:
        assert three[key] == pytest.approx(3.0 * one[key], rel=1e-9)
        assert 0.6 < one[key] < 1.0
    only_c0 = ref.copy()
    only_c0[:, 0] += 2.0 * std[0]
    sw = m.sliced_wasserstein(only_c0, ref)
    assert sw["c1"] == pytest.approx(0.0, abs=1e-9)  # channel 1 untouched
    assert sw["c0"] == pytest.approx(2.0 * one["c0"], rel=1e-9)  # same per-channel directions
    assert 0 < sw["all"] < three["all"]


def test_sliced_wasserstein_standardizes_with_the_reference_and_all_is_joint(fields):
    ref = fields["ref"]
    mu = ref.mean(axis=(0, 2, 3))[:, None, None]
    # scaled about the mean by a: standardized projections a z against z, W1 = |a - 1| E|z . d|
    wide, narrow = (m.sliced_wasserstein(mu + a * (ref - mu), ref) for a in (2.0, 0.5))
    for key in wide:
        assert wide[key] == pytest.approx(2.0 * narrow[key], rel=1e-9)
        assert 0.3 < narrow[key] < 0.5  # 0.5 x E|N(0, 1)|
    # channel 1 a copy of channel 0: shuffling channel 1 across samples keeps both marginals
    # (per-channel SW exactly 0) but breaks the correlation, which only the joint "all" sees
    twin = np.concatenate([ref[:, :1], 3.0 * ref[:, :1]], axis=1)
    shuffled = twin.copy()
    shuffled[:, 1] = twin[np.random.default_rng(0).permutation(len(twin)), 1]
    sw = m.sliced_wasserstein(shuffled, twin)
    assert sw["c0"] == 0.0 and sw["c1"] == pytest.approx(0.0, abs=1e-12)
    assert sw["all"] > 0.05  # the joint projections differ, though every marginal matches exactly


def test_sliced_wasserstein_order_seed_batching_and_standardization(fields):
    ref, held = fields["ref"], fields["held"]
    base = m.sliced_wasserstein(held, ref, n_projections=64, seed=3)
    perm = np.random.default_rng(0).permutation(len(held))
    for other in (
        m.sliced_wasserstein(held[perm], ref[::-1], n_projections=64, seed=3),
        m.sliced_wasserstein(held, ref, n_projections=64, seed=3, batch_size=17),
        m.sliced_wasserstein(torch.from_numpy(held).float(), ref, n_projections=64, seed=3),
    ):
        for key in base:
            assert other[key] == pytest.approx(base[key], rel=1e-5)
    other_seed = m.sliced_wasserstein(held, ref, n_projections=64, seed=4)
    assert other_seed["all"] != base["all"]
    assert other_seed["all"] == pytest.approx(base["all"], rel=0.5)  # same quantity, other directions
    # standardized with the reference's moments: invariant to a common affine change of units
    scaled = m.sliced_wasserstein(5.0 * held - 3.0, 5.0 * ref - 3.0, n_projections=64, seed=3)
    raw = m.sliced_wasserstein(5.0 * held - 3.0, 5.0 * ref - 3.0, n_projections=64, seed=3, standardize=False)
    raw1 = m.sliced_wasserstein(held, ref, n_projections=64, seed=3, standardize=False)
    for key in base:
        assert scaled[key] == pytest.approx(base[key], rel=1e-9)
        assert raw[key] == pytest.approx(5.0 * raw1[key], rel=1e-9)


# -- power spectrum ------------------------------------------------------------------------------
def test_power_spectrum_of_sinusoids_sits_in_their_shell():
    j = np.arange(R)
    x = np.zeros((3, 2, R, R))
    x[:, 0] = 2.0 * np.sin(2 * np.pi * 3 * j / R)[None, None, :] + 7.0  # k = 3 along x, plus a mean
    x[:, 1] = 0.5 * np.cos(2 * np.pi * 5 * j / R)[None, :, None]  # k = 5 along y
    p = m.power_spectrum(x)
    counts = shell_counts(R, R)
    assert p.shape == (2, counts.size)
    expected = np.zeros_like(p)
    expected[0, 3] = 2.0**2 / 2 / counts[3]  # variance A^2 / 2, spread over the shell's modes
    expected[1, 5] = 0.5**2 / 2 / counts[5]
    np.testing.assert_allclose(p, expected, atol=1e-12)


def test_power_spectrum_parseval_mean_invariance_and_batching(fields):
    x = fields["ref"][:40]
    p = m.power_spectrum(x)
    counts = shell_counts(R, R)
    variance = x.var(axis=(2, 3)).mean(axis=0)  # per channel, mean over samples
    np.testing.assert_allclose((p * counts).sum(axis=1), variance, rtol=1e-10)
    assert np.all(p[:, 0] == pytest.approx(0.0, abs=1e-20))  # the mean is removed
    np.testing.assert_allclose(m.power_spectrum(x + 10.0), p, rtol=1e-8, atol=1e-16)
    np.testing.assert_allclose(m.power_spectrum(x, batch_size=7), p, rtol=1e-10)
    np.testing.assert_allclose(m.power_spectrum(torch.from_numpy(x)), p, rtol=1e-10)
    # non-square fields: every shell still has modes, Parseval still holds
    y = np.random.default_rng(0).standard_normal((5, 1, 8, 12))
    py = m.power_spectrum(y)
    assert np.isfinite(py).all()
    np.testing.assert_allclose((py * shell_counts(8, 12)).sum(), y.var(axis=(2, 3)).mean(), rtol=1e-10)


def test_spectrum_error(fields):
    ref, held = fields["ref"], fields["held"]
    same = m.spectrum_error(ref, ref)
    assert same == {"c0": 0.0, "c1": 0.0, "all": 0.0}
    held_err = m.spectrum_error(held, ref)
    assert 0 < held_err["all"] < 0.05
    shrunk = m.spectrum_error(0.5 * ref, ref)
    for key in shrunk:
        assert shrunk[key] == pytest.approx(math.log10(4), rel=1e-6)  # 0.5x amplitude = 1/4 power
    blurred = m.spectrum_error(blur(held), ref)
    assert blurred["all"] > 5 * held_err["all"] and blurred["all"] > 0.1
    assert m.spectrum_error(held, ref, batch_size=13)["all"] == pytest.approx(held_err["all"], rel=1e-10)


# -- moments -------------------------------------------------------------------------------------
def test_channel_moments_match_numpy_and_are_batch_invariant(fields):
    x = fields["ref"][:50]
    mean, std, amp = m.channel_moments(x)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(amp, np.abs(x).max(axis=(2, 3)).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(mean, LOC, atol=0.1)
    for bs in (1, 7, 49, 50, 1000):
        for got, want in zip(m.channel_moments(x, batch_size=bs), (mean, std, amp), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-10)
    # a large offset: the streaming (Chan) update does not lose the variance to cancellation
    _, std_big, _ = m.channel_moments(x + 1e8, batch_size=3)
    np.testing.assert_allclose(std_big, std, rtol=1e-6)


def test_moments_of_known_arrays():
    ref = np.zeros((4, 2, 8, 8))
    ref[:2, 0], ref[2:, 0] = 1.0, 3.0  # channel 0: mean 2, std 1, max|x| per sample 1,1,3,3 -> 2
    ref[:, 1] = -4.0  # channel 1: constant, std 0 -> absolute errors
    samples = ref.copy()
    samples[:, 0] += 1.0  # channel 0 mean 3, std 1, amplitude 3
    samples[:, 1] = 2.0 * ref[:, 1]
    out = m.moments(samples, ref)
    c0 = out["c0"]
    assert (c0["reference_mean"], c0["reference_std"], c0["reference_amplitude"]) == pytest.approx((2, 1, 2))
    assert (c0["sample_mean"], c0["sample_std"], c0["sample_amplitude"]) == pytest.approx((3, 1, 3))
    assert (c0["mean_error"], c0["std_error"], c0["amplitude_error"]) == pytest.approx((1.0, 0.0, 0.5))
    c1 = out["c1"]
    assert c1["mean_error"] == pytest.approx(4.0)  # |-8 - -4| / 1 (zero std read as 1)
    assert c1["std_error"] == pytest.approx(0.0)
    assert c1["amplitude_error"] == pytest.approx(1.0)  # |8 - 4| / 4
    assert out["all"] == pytest.approx({"mean_error": 2.5, "std_error": 0.0, "amplitude_error": 0.75})


def test_moments_shrunk_copy_and_names(poisson):
    pde, ref, held = poisson
    out = m.moments(0.5 * ref, ref, pde=pde)
    assert set(out) == {"f", "u", "all"}
    for name in ("f", "u"):
        assert out[name]["std_error"] == pytest.approx(0.5, rel=1e-9)
        assert out[name]["amplitude_error"] == pytest.approx(0.5, rel=1e-9)
    same = m.moments(held, held, pde=pde, batch_size=9)
    assert same["all"] == {"mean_error": 0.0, "std_error": 0.0, "amplitude_error": 0.0}
    assert m.moments(held, ref, pde=pde)["all"]["std_error"] < 0.2


# -- diversity -----------------------------------------------------------------------------------
def test_diversity_matches_brute_force_and_white_noise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 2, 8, 8)) * np.array([1.0, 5.0])[:, None, None]
    std = x.std(axis=(0, 2, 3))[:, None, None]
    z = x / std
    brute = np.mean(
        [np.sqrt(((z[i] - z[j]) ** 2).mean()) for i in range(len(z)) for j in range(i + 1, len(z))]
    )
    out = m.diversity(x)
    assert set(out) == {"mean_distance"}  # no reference, no ratio
    assert out["mean_distance"] == pytest.approx(brute, rel=1e-10)
    assert m.diversity(x, batch_size=5)["mean_distance"] == pytest.approx(brute, rel=1e-10)
    assert out["mean_distance"] == pytest.approx(math.sqrt(2), rel=0.05)  # iid standardized pixels


def test_diversity_ratio_held_out_vs_collapse(fields):
    ref, held = fields["ref"], fields["held"]
    out = m.diversity(held, ref)
    assert out["ratio"] == pytest.approx(1.0, abs=0.1)
    assert out["ratio"] == pytest.approx(out["mean_distance"] / out["reference_mean_distance"])
    collapsed = np.repeat(held[:1], len(held), axis=0)
    gone = m.diversity(collapsed, ref)
    assert gone["mean_distance"] == 0.0 and gone["ratio"] == 0.0
    few = m.diversity(np.tile(held[:3], (100, 1, 1, 1)), ref)  # three distinct fields
    assert 0.3 < few["ratio"] < 1.0
    shrunk = m.diversity(0.5 * held, ref)  # standardized with the reference's std, not its own
    assert shrunk["mean_distance"] == pytest.approx(0.5 * out["mean_distance"], rel=1e-9)
    assert shrunk["reference_mean_distance"] == pytest.approx(out["reference_mean_distance"], rel=1e-12)
    assert shrunk["ratio"] == pytest.approx(0.5 * out["ratio"], rel=1e-9)


def test_diversity_pair_subsampling_is_seeded_and_close(fields):
    held = fields["held"][:120]  # 7140 pairs
    full = m.diversity(held, max_pairs=10_000)["mean_distance"]
    sub = m.diversity(held, max_pairs=600, seed=1)["mean_distance"]
    assert sub == m.diversity(held, max_pairs=600, seed=1)["mean_distance"]
    assert sub != m.diversity(held, max_pairs=600, seed=2)["mean_distance"]
    assert sub == pytest.approx(full, rel=0.05)
    with pytest.raises(ShapeError):
        m.diversity(held[:1])


def test_diversity_random_pairs_never_pair_a_sample_with_itself():
    x = np.zeros((3, 1, 8, 8))
    x[0, 0, 0, 0] = x[1, 0, 0, 1] = x[2, 0, 0, 2] = 1.0  # three equidistant fields
    every = m.diversity(x)["mean_distance"]
    assert every > 0
    for seed in range(10):  # 2 < 3 pairs: random pairs, all at the same distance
        assert m.diversity(x, max_pairs=2, seed=seed)["mean_distance"] == pytest.approx(every, rel=1e-12)


# -- memorization --------------------------------------------------------------------------------
def brute_nearest(samples, train, exclude_self=False):
    mean, std = train.mean(axis=(0, 2, 3))[:, None, None], train.std(axis=(0, 2, 3))[:, None, None]
    s = ((samples - mean) / std).reshape(len(samples), -1)
    t = ((train - mean) / std).reshape(len(train), -1)
    d = np.sqrt(((s[:, None, :] - t[None, :, :]) ** 2).mean(axis=2))
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


def test_nearest_neighbour_distances_match_brute_force(fields):
    train, held = fields["train"], fields["held"][:40]
    want = brute_nearest(held, train)
    for bs in (256, 7):
        np.testing.assert_allclose(m.nearest_neighbour_distances(held, train, batch_size=bs), want, rtol=1e-8)
    copies = train[[5, 0, 119, 64]]
    np.testing.assert_allclose(m.nearest_neighbour_distances(copies, train, batch_size=7), 0.0, atol=1e-6)


def test_nearest_neighbour_distance_leave_one_out_and_ratio(fields):
    train, held = fields["train"], fields["held"]
    loo = brute_nearest(train, train, exclude_self=True)
    for bs in (256, 7):  # exclusions crossing train-batch borders
        out = m.nearest_neighbour_distance(held, train, batch_size=bs, train_subsample=len(train))
        assert out["train_mean"] == pytest.approx(loo.mean(), rel=1e-8)
    assert out["ratio"] == pytest.approx(1.0, abs=0.15)  # fresh draws sit as far as the train set's own
    assert out["min"] <= out["median"] and out["min"] <= out["mean"]
    assert out["mean"] == pytest.approx(brute_nearest(held, train).mean(), rel=1e-8)
    copied = m.nearest_neighbour_distance(train[:30], train, batch_size=7, train_subsample=len(train))
    assert copied["mean"] < 1e-6 and copied["ratio"] < 1e-5
    assert copied["train_mean"] > 0.1  # leave-one-out: a train field is not its own neighbour
    sub = m.nearest_neighbour_distance(held, train, batch_size=7, train_subsample=20, seed=3)
    assert sub == m.nearest_neighbour_distance(held, train, batch_size=7, train_subsample=20, seed=3)
    assert loo.min() <= sub["train_mean"] <= loo.max()
    twin = np.concatenate([train[:10], train[:1]])  # a duplicated train field: its neighbour is at 0
    assert m.nearest_neighbour_distance(held[:5], twin, train_subsample=11)["train_mean"] == pytest.approx(
        brute_nearest(twin, twin, exclude_self=True).mean(), rel=1e-8
    )
    with pytest.raises(ShapeError):
        m.nearest_neighbour_distance(held, train[:1])


# -- Darcy phases --------------------------------------------------------------------------------
def test_phase_share_and_off_phase_fraction_on_constructed_fields():
    lo, hi = 3.0, 12.0
    a = np.full((2, 10, 10), lo)
    a[:, :, :3] = hi  # share 0.3
    assert m.phase_share(a, lo, hi) == pytest.approx(0.3)
    assert m.off_phase_fraction(a, lo, hi) == 0.0
    a[0, 0, 5:] = lo + 0.05 * (hi - lo)  # within tolerance of a_low: not off-phase
    assert m.off_phase_fraction(a, lo, hi) == 0.0
    a[1, 9, :] = lo + 0.45 * (hi - lo)  # 10 pixels between the phases, nearer a_low
    a[1, 8, :4] = hi - 0.2 * (hi - lo)  # 4 pixels between the phases, nearer a_high
    assert m.off_phase_fraction(a, lo, hi) == pytest.approx(14 / 200)
    assert m.phase_share(a, lo, hi) == pytest.approx((60 - 3 + 1) / 200)
    assert m.off_phase_fraction(a, lo, hi, tolerance=0.5) == 0.0
    assert m.phase_share(torch.from_numpy(a), lo, hi) == m.phase_share(a, lo, hi)
    # units: the same field in other units (scale and offset) has the same share and off-phase
    assert m.off_phase_fraction(2 * a + 5, 2 * lo + 5, 2 * hi + 5) == pytest.approx(14 / 200)
    assert m.phase_share(2 * a + 5, 2 * lo + 5, 2 * hi + 5) == pytest.approx(58 / 200)
    b = np.array([lo, hi, (lo + hi) / 2, hi - 0.12 * (hi - lo), lo + 0.08 * (hi - lo)])
    assert m.phase_share(b, lo, hi) == pytest.approx(2 / 5)  # a tie (midway) is not "nearer a_high"
    assert m.off_phase_fraction(b, lo, hi) == pytest.approx(2 / 5)  # midway and 0.12 off; 0.08 is not


def test_darcy_phases_on_generated_and_blurred_data(darcy):
    pde, ref, held = darcy
    out = m.darcy_phases(pde, held, ref)
    assert 0.2 < out["reference_share"] < 0.8
    assert out["sample_off_phase"] == 0.0 and out["reference_off_phase"] == 0.0
    assert out["share_error"] == pytest.approx(abs(out["sample_share"] - out["reference_share"]))
    assert out["share_error"] < 0.1
    blurred = held.copy()
    blurred[:, 0] = blur(held[:, :1])[:, 0]
    hedged = m.darcy_phases(pde, blurred, ref)
    assert hedged["sample_off_phase"] > 0.1 and hedged["reference_off_phase"] == 0.0
    ones = held.copy()
    ones[:, 0] = pde.a_high
    assert m.darcy_phases(pde, ones, ref)["share_error"] == pytest.approx(1 - out["reference_share"])


# -- residual statistics -------------------------------------------------------------------------
def test_residual_summary_reproduces_the_file_floor(poisson_file):
    info = poisson_file
    x = data.read_fields(info.path)
    summary = m.residual_summary(info.pde, x)
    assert set(summary) == {"all", "interior", "boundary"}
    assert set(summary["all"]) == {"mean_mse", "median_mse", "mean_mae", "median_mae"}
    for part in summary:
        for stat, value in summary[part].items():
            assert value == pytest.approx(info.floor[part][stat], rel=1e-6, abs=1e-30)
    batched = m.residual_summary(info.pde, torch.from_numpy(x), batch_size=3)
    assert batched["interior"]["median_mse"] == pytest.approx(summary["interior"]["median_mse"], rel=1e-9)
    ratio = m.relative_to_floor(summary, info.floor)
    assert ratio["all"] == pytest.approx(1.0, rel=1e-6)
    assert ratio["interior"] == pytest.approx(1.0, rel=1e-6)
    assert ratio["boundary"] <= 1.0 + 1e-6  # the boundary condition is met exactly

    noisy = x.copy()
    noisy[:, 1] += 0.1 * x[:, 1].std() * np.random.default_rng(0).standard_normal(noisy[:, 1].shape)
    worse = m.relative_to_floor(m.residual_summary(info.pde, noisy), info.floor)
    assert worse["interior"] > 100 and worse["boundary"] > 1e3


def test_relative_to_floor_raises_round_off_floors():
    floor = {"all": {"median_mse": 2.0}, "boundary": {"median_mse": 0.0}, "interior": {"median_mse": 4.0}}
    summary = {
        "all": {"median_mse": 3.0, "mean_mse": 1.0},
        "boundary": {"median_mse": 1e-12},
        "interior": {"median_mse": 2.0},
        "interface": {"median_mse": 5.0},  # not in the floor: left out
    }
    out = m.relative_to_floor(summary, floor)
    assert out == pytest.approx({"all": 1.5, "boundary": 1e-12 / 2e-10, "interior": 0.5})
    assert m.relative_to_floor(summary, floor, stat="mean_mse") == {}  # not in the floor


# -- the bundle ----------------------------------------------------------------------------------
def test_fidelity_report_held_out_beats_perturbed(poisson):
    pde, ref, held = poisson
    std = ref.std(axis=(0, 2, 3))[:, None, None]
    report = m.fidelity_report(pde, held, ref, n_projections=64)
    assert set(report) == {"moments", "spectrum_error", "sliced_wasserstein", "diversity"} | {
        "score_terms",
        "fidelity_score",
    }
    terms = report["score_terms"]
    assert set(terms) == {"moments", "spectrum", "sliced_wasserstein", "diversity"}
    assert report["fidelity_score"] == pytest.approx(np.mean(list(terms.values())))
    assert terms["spectrum"] == report["spectrum_error"]["all"]
    assert terms["sliced_wasserstein"] == report["sliced_wasserstein"]["all"]
    assert terms["diversity"] == pytest.approx(abs(1 - report["diversity"]["ratio"]))
    assert terms["moments"] == pytest.approx(np.mean(list(report["moments"]["all"].values())))
    assert report["fidelity_score"] < 0.15
    rng = np.random.default_rng(0)
    perturbed = {
        "noise": held + 0.3 * std * rng.standard_normal(held.shape),
        "shift": held + 1.0 * std,
        "shrink": 0.5 * held,
        "collapse": np.repeat(held[:2], len(held) // 2, axis=0),
    }
    for name, x in perturbed.items():
        bad = m.fidelity_report(pde, x, ref, n_projections=64)
        assert bad["fidelity_score"] > 2 * report["fidelity_score"], name
        if name == "collapse":
            assert bad["score_terms"]["diversity"] > 0.5
    same = m.fidelity_report(pde, ref, ref, n_projections=64)
    assert same["fidelity_score"] == pytest.approx(0.0, abs=1e-12)


def test_fidelity_report_darcy_phases_and_memorization(darcy):
    pde, ref, held = darcy
    report = m.fidelity_report(pde, held, ref, train=ref, n_projections=32, max_pairs=500)
    assert report["phases"] == m.darcy_phases(pde, held, ref)
    assert report["score_terms"]["phase"] == pytest.approx(report["phases"]["share_error"])
    assert report["memorization"]["ratio"] == pytest.approx(1.0, abs=0.2)
    copied = m.fidelity_report(pde, ref[:32], ref, train=ref, n_projections=32, max_pairs=500)
    assert copied["memorization"]["ratio"] < 1e-5  # reported, not scored
    assert "memorization" not in copied["score_terms"]
    as_torch = m.fidelity_report(
        pde,
        torch.from_numpy(held),
        torch.from_numpy(ref),
        train=torch.from_numpy(ref),
        n_projections=32,
        max_pairs=500,
        batch_size=20,
    )  # tensors, and batches that split both sets: the same numbers
    assert as_torch["fidelity_score"] == pytest.approx(report["fidelity_score"], rel=1e-9)
    assert as_torch["memorization"] == pytest.approx(report["memorization"], rel=1e-9)
    blurred = held.copy()
    blurred[:, 0] = blur(held[:, :1])[:, 0]
    hedged = m.fidelity_report(pde, blurred, ref, n_projections=32, max_pairs=500)
    assert hedged["score_terms"]["phase"] > report["score_terms"]["phase"] + 0.1


# -- bad input -----------------------------------------------------------------------------------
def test_bad_input_raises(fields, poisson):
    ref = fields["ref"][:10]
    pde, pref, _ = poisson
    with pytest.raises(ShapeError, match=r"differ in \[C, H, W\]"):
        m.moments(ref[:, :1], ref)  # channel counts
    with pytest.raises(ShapeError):
        m.sliced_wasserstein(ref[:, :, :8, :8], ref)  # resolutions
    with pytest.raises(ShapeError):
        m.diversity(ref, ref[:, :, :, :8])
    with pytest.raises(ShapeError):
        m.spectrum_error(ref[0], ref)  # no batch dim
    with pytest.raises(ShapeError, match="empty"):
        m.moments(ref[:0], ref)
    with pytest.raises(ShapeError):
        m.moments(pref[:, :1], pref[:, :1], pde=pde)  # one channel, the PDE has two
    with pytest.raises(ShapeError):
        m.nearest_neighbour_distances(ref, ref[:, :1])
    bad = ref.copy()
    bad[3, 1, 2, 2] = np.nan
    with pytest.raises(NonFiniteError):
        m.moments(bad, ref)
    with pytest.raises(NonFiniteError):
        m.sliced_wasserstein(ref, bad)
    with pytest.raises(NonFiniteError):
        m.diversity(bad)
    with pytest.raises(NonFiniteError):
        m.phase_share(bad, 3.0, 12.0)
    nan_pde = pref[:4].copy()
    nan_pde[0, 0, 0, 0] = np.inf
    with pytest.raises(NonFiniteError):
        m.fidelity_report(pde, nan_pde, pref)
    with pytest.raises(NonFiniteError):
        m.residual_summary(pde, nan_pde)
    with pytest.raises(ConfigError):
        m.moments(ref, ref, batch_size=0)
    with pytest.raises(ConfigError):
        m.sliced_wasserstein(ref, ref, n_projections=0)


def test_degenerate_arguments_are_clear_errors():
    x = np.random.default_rng(0).standard_normal((6, 1, 8, 8))
    with pytest.raises(ConfigError, match="max_pairs"):
        m.diversity(x, max_pairs=0)
    with pytest.raises(ConfigError, match="train_subsample"):
        m.nearest_neighbour_distance(x, x, train_subsample=0)
    with pytest.raises(ShapeError, match="non-empty"):
        m.wasserstein_1d(np.array([]), np.array([1.0]))


def test_a_fidelity_term_registered_from_outside_joins_the_report_and_the_score(poisson, darcy, monkeypatch):
    """A new fidelity term is one function plus one registration (here: the share of samples whose
    peak |u| exceeds the reference's largest, for Poisson only)."""
    from pirf.evaluation.metrics import FIDELITY_TERMS, FidelityTerm, register_fidelity_term

    monkeypatch.setattr("pirf.evaluation.metrics.FIDELITY_TERMS", dict(FIDELITY_TERMS))

    def peaks(inputs):
        top = np.abs(np.asarray(inputs.reference)[:, 1]).max()
        return {
            "share_above": float((np.abs(np.asarray(inputs.samples)[:, 1]).max(axis=(1, 2)) > top).mean())
        }

    register_fidelity_term(
        FidelityTerm(
            "peaks", "peaks", peaks, lambda r: r["share_above"], applies=lambda pde: pde.name == "poisson"
        )
    )
    pde, ref, held = poisson
    report = m.fidelity_report(pde, 10.0 * held, ref, n_projections=16)
    assert (
        report["peaks"]["share_above"] > 0.5
        and report["score_terms"]["peaks"] == report["peaks"]["share_above"]
    )
    assert list(report["score_terms"]) == ["moments", "spectrum", "sliced_wasserstein", "diversity", "peaks"]
    assert report["fidelity_score"] == pytest.approx(np.mean(list(report["score_terms"].values())))
    other, ref_d, held_d = darcy  # it applies to Poisson only
    assert (
        "peaks" not in m.fidelity_report(other, held_d, ref_d, n_projections=16, max_pairs=100)["score_terms"]
    )
