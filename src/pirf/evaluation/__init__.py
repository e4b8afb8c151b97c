"""Evaluation: residual statistics next to the data floor, and the fidelity, diversity and
memorization metrics that guard a reward fine-tune against reward hacking."""

from pirf.evaluation.metrics import (
    channel_moments,
    darcy_phases,
    diversity,
    fidelity_report,
    moments,
    nearest_neighbour_distance,
    nearest_neighbour_distances,
    off_phase_fraction,
    phase_share,
    power_spectrum,
    relative_to_floor,
    residual_summary,
    sliced_wasserstein,
    spectrum_error,
    wasserstein_1d,
)

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
