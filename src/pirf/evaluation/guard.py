"""The fidelity guard: may a fine-tuned (or guided) model stand in for its base? Judged per channel.

One implementation for every place that decides it: the fine-tune's early stopping and final
selection (`pirf.finetune.selection`), the bench's guidance sweeps and its table (`pirf.bench`), and
the acceptance script. Both sides are scored on the same seeds against the same held-out data
(`fidelity_report`); the rule (docs/finetune.md, "The fidelity guard, per channel"):

    admissible  <=>  the samples are finite,
                     score <= (1 + fidelity) * score_base                       (the composite)
                     and for every channel c and t in {spectrum, std, amplitude}:
                     t_c <= max((1 + channel) * t_c^base, t_c^base + margin_t)

with ``fidelity`` = ``channel`` = 0.2, margin 0.1 dex for the spectrum error and 0.05 for the
relative std and amplitude errors (`GuardTolerances`). The composite alone averages over
channels and terms, so a channel the reward does not see can leave the data while the others
improve (issue 24: Helmholtz's f, spectrum error 0.057 -> 0.938 dex at an unchanged score). The
absolute margins keep a base that is near-perfect on a channel from being held to its own
sampling noise: 0.1 dex is a 26% power mismatch averaged over shells, 0.05 a 5% error of the
channel's std or mean peak |x| (a 10% power change, about 0.04 dex). The mean error, the
per-channel sliced W1 and diversity are reported per channel but judged only through the
composite: a zero-mean GRF channel's sample mean over 32 fields moves by ~0.05 of its std from
seed set to seed set, and the per-channel SW and diversity add little the spectrum and moments
do not already see. A result recorded without per-channel terms (a run older than this guard) is
judged on the composite alone, as before.

A scored result, as the guard reads it, is a `Score` (``Score.from_mapping`` of the mapping the
scorers write and the records keep: ``{"fidelity", "finite", "channels", ...}``);
``Score.judge(base, tolerances)`` is the guard, and the functions `judge`, `admissible` and
`worst_channel` take the mappings directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JUDGED = ("spectrum", "std", "amplitude")
"""The per-channel terms the guard judges (keys of `pirf.evaluation.metrics.channel_terms`)."""
UNITS = {"spectrum": " dex"}


@dataclass(frozen=True)
class GuardTolerances:
    """How far a candidate may move from its base (see the module docstring for the rule).

    ``fidelity``: the composite score may grow by this fraction; ``channel``: each judged
    per-channel term by this fraction, or by its margin where that is larger:
    ``spectrum_margin`` (dex) for the spectrum error, ``moment_margin`` for the relative std and
    amplitude errors. A huge ``channel`` (the ablations' "no guard", 1e9) turns the per-channel
    check off wherever the base's term is not exactly 0.
    """

    fidelity: float = 0.2
    channel: float = 0.2
    spectrum_margin: float = 0.1
    moment_margin: float = 0.05

    @classmethod
    def of(cls, config: Any) -> GuardTolerances:
        """The tolerances a config holds (`RegularizationConfig` or `BenchConfig` fields
        ``fidelity_tolerance``, ``channel_tolerance``, ``channel_spectrum_margin``,
        ``channel_moment_margin``; a mapping with those keys works too); missing ones default."""
        get = config.get if isinstance(config, Mapping) else lambda k, d: getattr(config, k, d)
        d = cls()
        return cls(
            float(get("fidelity_tolerance", d.fidelity)),
            float(get("channel_tolerance", d.channel)),
            float(get("channel_spectrum_margin", d.spectrum_margin)),
            float(get("channel_moment_margin", d.moment_margin)),
        )

    def margin(self, term: str) -> float:
        return self.spectrum_margin if term == "spectrum" else self.moment_margin

    def limit(self, term: str, base: float) -> float:
        """The largest admissible value of per-channel ``term`` whose base value is ``base``."""
        return max((1 + self.channel) * base, base + self.margin(term))

    def to_dict(self) -> dict[str, float]:
        return {
            "fidelity_tolerance": self.fidelity,
            "channel_tolerance": self.channel,
            "channel_spectrum_margin": self.spectrum_margin,
            "channel_moment_margin": self.moment_margin,
        }


@dataclass(frozen=True)
class Change:
    """One term of one channel, base against candidate, with the guard's limit."""

    channel: str  # a channel name, or "all" for the composite score
    term: str
    base: float
    value: float
    limit: float

    @property
    def ratio(self) -> float:
        """value / base (inf for a base of 0)."""
        return self.value / self.base if self.base > 0 else math.inf

    @property
    def load(self) -> float:
        """value / limit: above 1 the guard refuses."""
        return self.value / self.limit if self.limit > 0 else math.inf

    def short(self) -> str:
        """e.g. ``f spectrum 0.057 -> 0.938 (16.5x)``."""
        ratio = f"{self.ratio:.2g}x" if math.isfinite(self.ratio) else "from 0"
        return f"{self.channel} {self.term} {self.base:.3g} -> {self.value:.3g} ({ratio})"

    def __str__(self) -> str:
        unit = UNITS.get(self.term, "")
        what = "fidelity score" if self.channel == "all" else f"channel {self.channel}: {self.term} error"
        return f"{what} {self.value:.3g}{unit} > limit {self.limit:.3g} (base {self.base:.3g})"


@dataclass(frozen=True)
class Verdict:
    """The guard's answer: ``ok``, and each reason it is not (the failed channel and term)."""

    ok: bool
    failures: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()  # (channel, term) of each failure; ("all", "score")
    per_channel: bool = False  # whether per-channel terms were there to judge

    def to_dict(self) -> dict[str, Any]:
        return {"admissible": self.ok, "failures": list(self.failures), "per_channel": self.per_channel}

    def __str__(self) -> str:
        return "admissible" if self.ok else "refused: " + "; ".join(self.failures)


def channel_changes(
    candidate: Mapping[str, Mapping[str, float]],
    base: Mapping[str, Mapping[str, float]],
    tolerances: GuardTolerances,
) -> list[Change]:
    """Every judged term of every channel both sides hold, as a `Change` (in channel order)."""
    out = []
    for name, base_terms in base.items():
        for term in JUDGED:
            if name in candidate and term in base_terms and term in candidate[name]:
                b = float(base_terms[term])
                out.append(Change(name, term, b, float(candidate[name][term]), tolerances.limit(term, b)))
    return out


@dataclass(frozen=True)
class Score:
    """A scored result as the fidelity guard reads it.

    ``fidelity``: the composite fidelity score (None: none); ``finite``: False when the samples
    were not all finite; ``diverged``: True for a run stopped as diverged; ``channels``: the
    per-channel terms ``{channel: {term: value}}`` (`pirf.evaluation.metrics.channel_terms`;
    empty for a result older than the per-channel guard). Other entries of a result (residuals,
    timings) are not the guard's and stay in the mapping the result is recorded as.
    """

    fidelity: float | None
    finite: bool = True
    diverged: bool = False
    channels: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, result: Mapping[str, Any] | Score) -> Score:
        """The guard's view of a result mapping (``fidelity``, ``finite``, ``diverged``,
        ``channels``; missing ones: no score, finite, not diverged, no channels)."""
        if isinstance(result, Score):
            return result
        fidelity = result.get("fidelity")
        return cls(
            None if fidelity is None else float(fidelity),
            result.get("finite") is not False,
            bool(result.get("diverged")),
            result.get("channels") or {},
        )

    def to_dict(self) -> dict[str, Any]:
        """The mapping `from_mapping` reads back to this score."""
        channels = {c: dict(terms) for c, terms in self.channels.items()}
        return {
            "fidelity": self.fidelity,
            "finite": self.finite,
            "diverged": self.diverged,
            "channels": channels,
        }

    @property
    def comparable(self) -> float | None:
        """The composite score the guard compares, or None: non-finite samples, a diverged run,
        no score or NaN."""
        if not self.finite or self.diverged or self.fidelity is None or math.isnan(self.fidelity):
            return None
        return self.fidelity

    def worst_channel(
        self, base: Score | Mapping[str, Any], tolerances: GuardTolerances | None = None
    ) -> Change | None:
        """The judged per-channel term nearest to (or furthest past) its limit against ``base``,
        i.e. the largest value / limit; None without per-channel terms on both sides."""
        base = Score.from_mapping(base)
        changes = channel_changes(self.channels, base.channels, tolerances or GuardTolerances())
        return max(changes, key=lambda c: c.load) if changes else None

    def judge(self, base: Score | Mapping[str, Any], tolerances: GuardTolerances | None = None) -> Verdict:
        """The fidelity guard (module docstring) of this score against ``base``'s: admissible iff
        finite, score <= (1 + fidelity) score_base and every judged channel term t_c <=
        max((1 + channel) t_c^base, t_c^base + margin_t). A base with non-finite samples admits
        any finite score on the composite; a base without a score admits nothing."""
        base, tol = Score.from_mapping(base), tolerances or GuardTolerances()
        score, base_score = self.comparable, base.comparable
        if score is None:
            return Verdict(False, ("non-finite samples or no fidelity score",), (("all", "finite"),))
        if base_score is None and base.finite:
            return Verdict(False, ("the base has no fidelity score to compare with",), (("all", "base"),))
        failures: list[Change] = []
        if base_score is not None:  # a non-finite base (inf) admits any finite candidate on the composite
            limit = (1 + tol.fidelity) * base_score
            if score > limit:
                failures.append(Change("all", "score", base_score, score, limit))
        changes = channel_changes(self.channels, base.channels, tol)
        failures += [c for c in changes if not c.value <= c.limit]  # NaN fails too
        return Verdict(
            not failures,
            tuple(str(c) for c in failures),
            tuple((c.channel, c.term) for c in failures),
            bool(changes),
        )


def worst_channel(
    candidate: Mapping[str, Any], base: Mapping[str, Any], tolerances: GuardTolerances | None = None
) -> Change | None:
    """`Score.worst_channel` of two result mappings."""
    return Score.from_mapping(candidate).worst_channel(base, tolerances)


def judge(
    candidate: Mapping[str, Any], base: Mapping[str, Any], tolerances: GuardTolerances | None = None
) -> Verdict:
    """The fidelity guard (`Score.judge`) on two scored results.

    A result is a mapping with ``fidelity`` (the composite score; None or NaN: no score),
    optionally ``finite`` (False: non-finite samples) or ``diverged`` (True), and ``channels``
    (`channel_terms`: ``{channel: {term: value}}``). Returns a `Verdict` naming each failed
    channel and term.
    """
    return Score.from_mapping(candidate).judge(base, tolerances)


def admissible(
    candidate: Mapping[str, Any], base: Mapping[str, Any], tolerances: GuardTolerances | None = None
) -> bool:
    """``judge(candidate, base, tolerances).ok``."""
    return judge(candidate, base, tolerances).ok


__all__ = [
    "JUDGED",
    "Change",
    "GuardTolerances",
    "Score",
    "Verdict",
    "admissible",
    "channel_changes",
    "judge",
    "worst_channel",
]
