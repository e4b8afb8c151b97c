"""Darcy-specific fidelity: the phase share and the off-phase fraction of a two-phase
permeability field, which a blurred or hedged coefficient (values between the phases) raises."""

from __future__ import annotations

import numpy as np

from pirf.evaluation.fields import Fields, to_numpy
from pirf.pdes.darcy import Darcy

OFF_PHASE_TOLERANCE = 0.1  # a pixel is off-phase if farther than this x (a_high - a_low) from both phases


def phase_share(a: Fields, a_low: float, a_high: float) -> float:
    """Fraction of pixels of a permeability field (any shape) nearer ``a_high`` than ``a_low``."""
    a = to_numpy(a)
    return float((np.abs(a - a_high) < np.abs(a - a_low)).mean())


def off_phase_fraction(
    a: Fields, a_low: float, a_high: float, tolerance: float = OFF_PHASE_TOLERANCE
) -> float:
    """Fraction of pixels farther than ``tolerance x (a_high - a_low)`` from both phases.

    0 for a two-phase field; a blurred or hedged permeability (values between the phases, the
    cheap way to smooth an interface) makes it positive.
    """
    a = to_numpy(a)
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


__all__ = ["OFF_PHASE_TOLERANCE", "darcy_phases", "off_phase_fraction", "phase_share"]
