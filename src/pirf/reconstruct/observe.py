"""Sparse observations of a field: which pixels of which channels are seen, and their values.

An observation plan names, per channel, the fraction of its pixels that are observed
(``--observe u:0.03,a:1.0``; 1.0 is the whole channel, a channel not named is not observed).
Case i of a plan draws its pixels from ``SeedSequence([seed, i, c])`` for channel c, so the
masks of case i depend only on (seed, i) -- the same rule as the samples' noise -- and a run of
8 cases is a prefix of a run of 64. DiffusionPDE (Huang et al. 2024) observes 500 random points
of a 128 x 128 grid (3%) per channel in the same way.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pirf import pdes
from pirf.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class ObservationPlan:
    """The observed fraction of each channel of a PDE's fields (0 for an unobserved channel)."""

    fields: tuple[str, ...]
    fractions: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.fields) != len(self.fractions):
            raise ConfigError(
                f"{len(self.fractions)} fractions for the fields {', '.join(self.fields)}",
                "give one fraction per field",
            )
        for name, fraction in zip(self.fields, self.fractions, strict=True):
            if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
                raise ConfigError(
                    f"observed fraction {fraction} for {name}", "use a fraction in [0, 1] (1.0: all of it)"
                )
        if not any(self.fractions):
            raise ConfigError("nothing is observed", "observe a fraction > 0 of at least one field")

    @classmethod
    def parse(cls, text: str, pde: pdes.PDE) -> ObservationPlan:
        """``"u:0.03,a:1.0"`` for ``pde``'s fields: CHANNEL:FRACTION pairs, comma separated."""
        fractions = dict.fromkeys(pde.fields, 0.0)
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition(":")
            if not sep:
                raise ConfigError(
                    f"--observe item {item!r} is not CHANNEL:FRACTION", "write e.g. u:0.03,a:1.0"
                )
            if name not in fractions:
                close = difflib.get_close_matches(name, pde.fields, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise UnknownNameError(
                    f"{pde.name} has no field {name!r}", f"{hint}its fields: {', '.join(pde.fields)}"
                )
            try:
                fractions[name] = float(value)
            except ValueError:
                raise ConfigError(
                    f"--observe {name}:{value}: {value!r} is not a number", "write a fraction such as 0.03"
                ) from None
        return cls(tuple(pde.fields), tuple(fractions[name] for name in pde.fields))

    def describe(self) -> str:
        """The plan as ``--observe`` writes it (observed channels only)."""
        return ",".join(f"{n}:{f:g}" for n, f in zip(self.fields, self.fractions, strict=True) if f > 0)

    def observed(self) -> tuple[str, ...]:
        """The channels with observed pixels."""
        return tuple(n for n, f in zip(self.fields, self.fractions, strict=True) if f > 0)

    def masks(self, seed: int, cases: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
        """Boolean masks ``[len(cases), C, H, W]``: channel c of case i observes
        round(fraction_c H W) pixels drawn without replacement by ``SeedSequence([seed, i, c])``."""
        h, w = shape
        out = np.zeros((len(cases), len(self.fields), h, w), dtype=bool)
        for row, case in enumerate(cases):
            for c, fraction in enumerate(self.fractions):
                k = round(fraction * h * w)
                if k == 0:
                    continue
                rng = np.random.default_rng(np.random.SeedSequence([seed, case, c]))
                out[row, c].flat[rng.choice(h * w, size=k, replace=False)] = True
        return out


__all__ = ["ObservationPlan"]
