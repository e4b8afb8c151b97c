"""Paired timing: cost ratios that hold on a shared, drifting machine.

Timing one setting after another and dividing their means measures the machine as much as the
settings: on a shared CPU a job that starts or stops between two runs moves one of them by tens
of percent (a PIRF iteration once came out cheaper than the sampling it contains). Here the
settings are *paired*: after ``warmup`` untimed calls of each, every one of ``pairs`` rounds
calls each setting once, back to back, in an order from a Williams design (`round_order`; with two
settings: A B, B A, A B, ...; every setting holds every place and follows every other setting
equally often), and the
ratio of a setting to the reference is taken *within* each round before the median over rounds.
A slow drift of the machine's speed scales both terms of a round's ratio and cancels; what is
left shows as the spread of the per-round ratios, reported beside their median.

- `paired_timing` times callables in this process (`time.perf_counter` for wall time,
  `time.process_time` for CPU time; both injectable). A callable that returns a float reports
  seconds it timed itself (e.g. a fine-tuning run's own loop clock, set-up excluded); that
  replaces the wall-clock reading.
- `paired_processes` runs commands instead, interleaved the same way, where each setting needs
  its own process (peak memory): wall time around each run, and the OS's accounting of that
  child from `os.wait4`: CPU time (user + system) and peak resident memory. The children are
  started by a small `Launcher` process, not by the caller: on Linux a child's peak counts the
  memory image it was forked with, so a child of a process holding torch would report at least
  the caller's size.

Both return `PairedTimings`: every round's `Measurement` per setting, and `Summary` per setting
(median, min and max of the seconds; median, quartiles and range of the per-round ratios).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

Clock = Callable[[], float]
Setting = Callable[[], float | None]

_RSS_UNITS_PER_MB = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes / kB


@dataclass(frozen=True)
class Measurement:
    """One call (or process run) of one setting in one round."""

    seconds: float  # wall clock around the call, or the seconds the callable timed itself
    cpu_seconds: float | None = None  # CPU time of the call (this process) or of the child (OS)
    peak_rss_mb: float | None = None  # a child process's peak resident memory (OS accounting)
    output: str = ""  # a child process's standard output


@dataclass(frozen=True)
class Summary:
    """One setting over the timed rounds. ``ratio_*``: the per-round ratios value / reference's
    value of the same round (median, quartiles by linear interpolation, range)."""

    name: str
    reference: str
    rounds: int
    median: float
    min: float
    max: float
    ratio_median: float
    ratio_q1: float
    ratio_q3: float
    ratio_min: float
    ratio_max: float
    cpu_median: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ratio_text(self, digits: int = 2) -> str:
        """``median (q1-q3)``, e.g. ``1.84 (1.80-1.90)``."""
        f = f".{digits}f"
        return f"{self.ratio_median:{f}} ({self.ratio_q1:{f}}-{self.ratio_q3:{f}})"


@dataclass
class PairedTimings:
    """The rounds of a paired measurement. ``orders[r]`` is the order the settings ran in round
    ``r`` (timed rounds only) and ``rounds[r][name]`` the setting's `Measurement` there."""

    names: tuple[str, ...]
    reference: str
    warmup: int
    orders: list[tuple[str, ...]] = field(default_factory=list)
    rounds: list[dict[str, Measurement]] = field(default_factory=list)

    def values(self, name: str, key: str = "seconds") -> list[float]:
        """``key`` (a `Measurement` field) of ``name`` in every timed round, in round order."""
        return [float(getattr(r[name], key)) for r in self.rounds]

    def ratios(self, name: str, reference: str | None = None, key: str = "seconds") -> list[float]:
        """Per round: ``name``'s value / ``reference``'s value *of the same round*."""
        ref = reference or self.reference
        return [_ratio(getattr(r[name], key), getattr(r[ref], key)) for r in self.rounds]

    def summary(self, name: str, reference: str | None = None, key: str = "seconds") -> Summary:
        """``name`` over the rounds (see `Summary`), ratios to ``reference`` (default: the run's)."""
        if not self.rounds:
            raise ValueError("no timed round: use pairs >= 1")
        values, ratios = sorted(self.values(name, key)), sorted(self.ratios(name, reference, key))
        cpu = [m.cpu_seconds for m in (r[name] for r in self.rounds)]
        known = sorted(c for c in cpu if c is not None)
        return Summary(
            name=name,
            reference=reference or self.reference,
            rounds=len(values),
            median=quantile(values, 0.5),
            min=values[0],
            max=values[-1],
            ratio_median=quantile(ratios, 0.5),
            ratio_q1=quantile(ratios, 0.25),
            ratio_q3=quantile(ratios, 0.75),
            ratio_min=ratios[0],
            ratio_max=ratios[-1],
            cpu_median=quantile(known, 0.5) if len(known) == len(cpu) else None,
        )

    def summaries(self, reference: str | None = None, key: str = "seconds") -> dict[str, Summary]:
        """`summary` of every setting, in the order the settings were given."""
        return {name: self.summary(name, reference, key) for name in self.names}

    def to_dict(self) -> dict[str, Any]:
        """The raw rounds (without process output) and the summaries, for a results file."""
        return {
            "reference": self.reference,
            "warmup": self.warmup,
            "pairs": len(self.rounds),
            "orders": [list(o) for o in self.orders],
            "rounds": [
                {n: {k: v for k, v in asdict(m).items() if k != "output"} for n, m in r.items()}
                for r in self.rounds
            ],
            "summary": {n: s.to_dict() for n, s in self.summaries().items()},
        }


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ascending ``sorted_values``, linear between order statistics (numpy's
    default), so the median of an even count is the mean of the middle two."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def round_order(names: Sequence[str], r: int) -> tuple[str, ...]:
    """The order of round ``r``: a row of a Williams design (Williams 1949) over ``names``.

    A plain rotation (A B C, B C A, C A B) keeps every setting behind the same predecessor, so a
    setting's after-effect (a large one returning its memory to the system, which the next call
    pays back in page faults) lands on one setting in every round: on a fine-tuning benchmark it
    made the reference, which follows the 0.9 GB full-chain setting, read ~10% slow (a PIRF
    iteration at 0.92x the sampling it contains; 1.04x in this order). A Williams design
    balances that carry-over: with n settings, row 0 is 0, 1, n-1, 2,
    n-2, ... and row r adds r (mod n); over n rounds (2n when n is odd, the second n mirrored)
    every setting holds every place equally often and follows every other setting equally often
    within the rounds. Two settings: A B, B A, A B, ...
    """
    n = len(names)
    if n == 0:
        return ()
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    row = [(i + r) % n for i in first]
    if n % 2 and (r // n) % 2:  # odd n: the second n rounds run mirrored
        row.reverse()
    return tuple(names[i] for i in row)


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else math.nan


def _check(names: Sequence[str], reference: str, pairs: int, warmup: int) -> None:
    if reference not in names:
        raise ValueError(f"reference {reference!r} is not among the settings {list(names)}")
    if pairs < 1 or warmup < 0:
        raise ValueError(f"pairs = {pairs}, warmup = {warmup}: use pairs >= 1 and warmup >= 0")


def _paired(
    names: Sequence[str],
    reference: str,
    pairs: int,
    warmup: int,
    measure: Callable[[str], Measurement],
    report: Callable[[int, str, Measurement], None] | None,
) -> PairedTimings:
    _check(names, reference, pairs, warmup)
    result = PairedTimings(tuple(names), reference, warmup)
    for r in range(warmup):
        for name in round_order(names, r):
            measure(name)
    for r in range(pairs):
        order = round_order(names, r)
        result.orders.append(order)
        result.rounds.append({})
        for name in order:
            result.rounds[-1][name] = measurement = measure(name)
            if report is not None:
                report(r, name, measurement)
        result.rounds[-1] = {name: result.rounds[-1][name] for name in names}  # the settings' order
    return result


def paired_timing(
    settings: Mapping[str, Setting],
    reference: str,
    pairs: int,
    warmup: int = 1,
    *,
    clock: Clock = time.perf_counter,
    cpu_clock: Clock | None = time.process_time,
    report: Callable[[int, str, Measurement], None] | None = None,
) -> PairedTimings:
    """Time the callables of ``settings`` (name -> callable) in this process, paired in rounds.

    ``warmup`` untimed rounds, then ``pairs`` timed ones, each calling every setting once in the
    order `round_order` gives; ``reference`` names the setting the ratios divide by. A callable's
    seconds are ``clock()`` after minus before its call, or the float it returns (seconds it timed
    itself); its CPU seconds are ``cpu_clock()``'s difference (None without ``cpu_clock``, or
    where the callable timed itself). ``report(round, name, measurement)`` is called after each
    timed call (e.g. to print progress).
    """
    cpu = cpu_clock

    def measure(name: str) -> Measurement:
        c0 = cpu() if cpu is not None else None
        t0 = clock()
        own = settings[name]()
        seconds = clock() - t0
        cpu_seconds = cpu() - c0 if cpu is not None and c0 is not None else None
        if own is not None:
            return Measurement(float(own), None)
        return Measurement(seconds, cpu_seconds)

    return _paired(list(settings), reference, pairs, warmup, measure, report)


_LAUNCHER = r"""
import json, os, subprocess, sys
for line in sys.stdin:
    job = json.loads(line)
    with open(job["stdout"], "wb") as out, open(job["stderr"], "wb") as err:
        proc = subprocess.Popen(job["argv"], stdout=out, stderr=err, env=job["env"], cwd=job["cwd"])
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    print(json.dumps({"returncode": proc.returncode, "cpu": cpu, "maxrss": usage.ru_maxrss}), flush=True)
"""


class Launcher:
    """A small Python process that starts the measured children and reaps them with `os.wait4`.

    Linux counts into a child's peak resident memory the memory image it had before its
    ``exec``, which is a copy of its parent's: a child started straight from a process that holds
    torch and a few models would report at least that much, whatever it used itself. Children
    started by this launcher (an interpreter without ``site``, about 10 MB) carry only its size.
    Use as a context manager; `run` runs one command to completion.
    """

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self.clock = clock
        self.folder = tempfile.TemporaryDirectory(prefix="pirf-timing-")
        argv = [sys.executable, "-I", "-S", "-c", _LAUNCHER]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> Measurement:
        """Run ``argv``: wall seconds around it, and the OS's accounting of the child from
        `os.wait4`: CPU seconds (user + system) and peak resident memory (MB). A failed run raises
        `subprocess.CalledProcessError` with its output."""
        assert self.process.stdin is not None and self.process.stdout is not None
        out, err = os.path.join(self.folder.name, "stdout"), os.path.join(self.folder.name, "stderr")
        job = {
            "argv": list(argv),
            "env": dict(env) if env is not None else None,
            "cwd": os.fspath(cwd) if cwd is not None else None,
            "stdout": out,
            "stderr": err,
        }
        t0 = self.clock()
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        seconds = self.clock() - t0
        if not line:
            raise RuntimeError(f"the timing launcher died running {list(argv)}")
        result = json.loads(line)
        with open(out, encoding="utf-8", errors="replace") as f:
            stdout = f.read()
        if result["returncode"] != 0:
            with open(err, encoding="utf-8", errors="replace") as f:
                stderr = f.read()
            raise subprocess.CalledProcessError(result["returncode"], list(argv), stdout, stderr)
        return Measurement(seconds, float(result["cpu"]), result["maxrss"] / _RSS_UNITS_PER_MB, stdout)

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.folder.cleanup()

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_process(
    argv: Sequence[str],
    *,
    clock: Clock = time.perf_counter,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> Measurement:
    """Run one command through a fresh `Launcher` (see `Launcher.run`)."""
    with Launcher(clock) as launcher:
        return launcher.run(argv, env, cwd)


def paired_processes(
    commands: Mapping[str, Sequence[str]],
    reference: str,
    pairs: int,
    warmup: int = 0,
    *,
    clock: Clock = time.perf_counter,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    report: Callable[[int, str, Measurement], None] | None = None,
) -> PairedTimings:
    """Like `paired_timing`, but each setting is a command (name -> argv) run in its own child
    process, the children of a round one after another in the round's order, all started by one
    `Launcher`. Each `Measurement` carries the child's CPU seconds and peak resident memory as
    the OS counted them (`os.wait4`), and its standard output (e.g. a JSON line it printed)."""
    with Launcher(clock) as launcher:
        return _paired(
            list(commands),
            reference,
            pairs,
            warmup,
            lambda name: launcher.run(commands[name], env, cwd),
            report,
        )


def method_note(
    pairs: int,
    warmup: int,
    reference: str,
    *,
    call: str = "call",
    against: str | None = None,
    processes: bool = False,
) -> str:
    """A paragraph for a results file saying how its timings were taken. ``call``: what one timed
    call of a setting is (e.g. ``"call (1 iteration of 8 trajectories)"``); ``against``: how to
    name the ratios' reference (default: ``reference``'s call)."""
    where = (
        "each in its own process (`paired_processes`)" if processes else "in one process (`paired_timing`)"
    )
    against = against or f"the call of `{reference}`"
    return (
        f"Measured with `pirf.evaluation.timing`, {where}: {warmup} untimed warm-up call(s) of "
        f"each setting, then {pairs} rounds in which every setting runs one {call}, back to back, "
        "in a balanced order (a Williams design: each setting at each place and behind each other "
        "setting equally often). Seconds are the median (min-max) over the rounds; "
        f"each ratio is the median over the rounds of the ratio to {against} in the same round "
        "(interquartile range in brackets, range beside it), so a drift of the machine's speed "
        "between rounds cancels instead of landing in the ratio."
    )


__all__ = [
    "Measurement",
    "PairedTimings",
    "Summary",
    "method_note",
    "paired_processes",
    "paired_timing",
    "quantile",
    "round_order",
    "run_process",
]
