"""Evaluation: residual statistics next to the data floor, and the fidelity, diversity and
memorization metrics that guard a reward fine-tune against reward hacking."""

from pirf.evaluation.distances import (
    channel_moments,
    diversity,
    moments,
    nearest_neighbour_distance,
    nearest_neighbour_distances,
    power_spectrum,
    sliced_wasserstein,
    spectrum_error,
    wasserstein_1d,
)
from pirf.evaluation.metrics import fidelity_report, relative_to_floor, residual_summary
from pirf.evaluation.phases import darcy_phases, off_phase_fraction, phase_share

__all__ = [
    "channel_moments",
    "darcy_phases",
    "diversity",
    "fidelity_report",
    "moments",
    "nearest_neighbour_distance",
    "nearest_neighbour_distances",
    "off_phase_fraction",
    "phase_share",
    "power_spectrum",
    "relative_to_floor",
    "residual_summary",
    "sliced_wasserstein",
    "spectrum_error",
    "wasserstein_1d",
]
