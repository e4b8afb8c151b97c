"""Residual, fidelity, diversity and memorization metrics on physical fields: the reward-hacking guards.

A reward fine-tune that lowers the PDE residual can do it by leaving the data distribution: shrinking
amplitudes, smoothing away small scales, collapsing onto a few samples, blurring Darcy's two-phase
permeability or copying training fields (the failure modes the PIRF paper, Yuan et al. 2025, guards
against with its weight regularization). Each metric measures one of these against a held-out
reference set of the same PDE: the residual statistics and the bundle (`fidelity_report`) are here,
moments, spectra, Wasserstein distances, diversity and memorization in `pirf.evaluation.distances`,
Darcy's phases in `pirf.evaluation.phases`, and the input handling in `pirf.evaluation.fields`.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pirf.data import ResidualAccumulator
from pirf.evaluation.distances import (
    diversity,
    moments,
    nearest_neighbour_distance,
    sliced_wasserstein,
    spectrum_error,
)
from pirf.evaluation.fields import AGGREGATE, Fields, check_pair, check_set, in_batches
from pirf.evaluation.phases import darcy_phases
from pirf.pdes.base import PDE
from pirf.pdes.darcy import Darcy


# -- residual statistics -------------------------------------------------------------------------
def residual_summary(pde: PDE, samples: Fields, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """Mean and median over samples of the per-sample residual MSE and MAE, per region (float64).

    ``{region: {mean_mse, median_mse, mean_mae, median_mae}}`` with regions ``all`` plus
    ``pde.regions`` (interior, boundary, Darcy's interface): the same statistics as a data
    file's ``floor``, computed in batches of ``batch_size`` samples.
    """
    check_set(samples, "samples", pde)
    acc = ResidualAccumulator(pde)
    for batch in in_batches(samples, batch_size):
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


# -- the fidelity terms: one function and one registration each ------------------------------------
@dataclass(frozen=True)
class FidelityInputs:
    """What a fidelity term measures: samples and held-out reference (physical units) and the
    settings `fidelity_report` was called with."""

    samples: Fields
    reference: Fields
    pde: PDE | None
    n_projections: int = 128
    seed: int = 0
    max_pairs: int = 4096
    batch_size: int = 256


@dataclass(frozen=True)
class FidelityTerm:
    """One term of the fidelity score. ``measure`` makes its report section (``report[section]``),
    ``score`` reads the dimensionless term off it (0 for the data, growing as samples leave it),
    ``applies`` says for which PDEs it is measured (all by default)."""

    name: str
    section: str
    measure: Callable[[FidelityInputs], Any]
    score: Callable[[Any], float]
    applies: Callable[[PDE | None], bool] = lambda pde: True


FIDELITY_TERMS: dict[str, FidelityTerm] = {}
"""The registered terms, in report order; `fidelity_report` measures each that applies."""


def register_fidelity_term(term: FidelityTerm) -> FidelityTerm:
    """Add ``term`` to every fidelity report from now on (a plug-in PDE may add its own); a name
    already registered is replaced."""
    FIDELITY_TERMS[term.name] = term
    return term


def _kw(i: FidelityInputs) -> dict[str, Any]:
    return {"pde": i.pde, "batch_size": i.batch_size}


for _term in (
    FidelityTerm(
        "moments",
        "moments",
        lambda i: moments(i.samples, i.reference, **_kw(i)),
        lambda m: float(np.mean(list(m[AGGREGATE].values()))),
    ),
    FidelityTerm(
        "spectrum",
        "spectrum_error",
        lambda i: spectrum_error(i.samples, i.reference, **_kw(i)),
        lambda e: e[AGGREGATE],
    ),
    FidelityTerm(
        "sliced_wasserstein",
        "sliced_wasserstein",
        lambda i: sliced_wasserstein(i.samples, i.reference, i.n_projections, i.seed, **_kw(i)),
        lambda w: w[AGGREGATE],
    ),
    FidelityTerm(
        "diversity",
        "diversity",
        lambda i: diversity(i.samples, i.reference, i.max_pairs, i.seed, **_kw(i)),
        lambda d: abs(1.0 - d["ratio"]),
    ),
    FidelityTerm(
        "phase",
        "phases",
        lambda i: darcy_phases(i.pde, i.samples, i.reference),
        lambda p: p["share_error"] + p["sample_off_phase"],
        applies=lambda pde: isinstance(pde, Darcy),
    ),
):
    register_fidelity_term(_term)
del _term


# -- the bundle ----------------------------------------------------------------------------------
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
    - Darcy only, ``phase``: share_error + sample off-phase fraction;
    - any term added with `register_fidelity_term` (one function and one registration: a
      plug-in PDE's own measure of faithfulness joins the score, the report and every table).

    Held-out data of the same distribution score near 0 (the SW term keeps a small finite-sample
    floor); use it relatively, e.g. "score within 20% of the base model's". Memorization is
    reported but not scored (a copy is perfectly faithful; it is a separate guard).

    Every term is there per channel too (`channel_terms` reads them off this report): the
    averages above hide a channel that leaves the data while another improves (issue 24: a
    Helmholtz fine-tune moved f's spectrum error 0.057 -> 0.938 dex at an unchanged score), so
    the fidelity guard (`pirf.evaluation.guard`) judges the channels one by one as well as the score.
    """
    check_pair(samples, reference, pde)
    inputs = FidelityInputs(samples, reference, pde, n_projections, seed, max_pairs, batch_size)
    report: dict = {}
    terms: dict[str, float] = {}
    for term in FIDELITY_TERMS.values():
        if term.applies(pde):
            report[term.section] = section = term.measure(inputs)
            terms[term.name] = float(term.score(section))
    if train is not None:
        report["memorization"] = nearest_neighbour_distance(samples, train, batch_size, seed=seed, pde=pde)
    report["score_terms"] = terms
    report["fidelity_score"] = float(np.mean(list(terms.values())))
    return report


__all__ = [
    "CHANNEL_TERMS",
    "FIDELITY_TERMS",
    "FidelityInputs",
    "FidelityTerm",
    "channel_terms",
    "fidelity_report",
    "register_fidelity_term",
    "relative_to_floor",
    "residual_summary",
]
