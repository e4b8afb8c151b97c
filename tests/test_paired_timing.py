"""The comparison logic of `pirf.evaluation.timing` (interleaving, warm-up, pairing), not numbers."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import sys

import pytest

from pirf.evaluation.timing import (
    Measurement,
    method_note,
    paired_processes,
    paired_timing,
    quantile,
    round_order,
)


class FakeClock:
    """A clock that a call advances by hand: ``tick(seconds)``."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def recording(calls: list[str], names: list[str]) -> dict:
    def make(name: str):
        return lambda: calls.append(name)

    return {name: make(name) for name in names}


def test_settings_are_interleaved_and_the_warmup_is_not_timed() -> None:
    calls: list[str] = []
    result = paired_timing(recording(calls, ["a", "b", "c"]), "a", pairs=4, warmup=2, cpu_clock=None)
    assert len(calls) == 3 * (2 + 4)
    warm, timed = calls[:6], calls[6:]
    assert sorted(warm) == ["a", "a", "b", "b", "c", "c"]
    # every timed round runs each setting exactly once, back to back
    rounds = [timed[i : i + 3] for i in range(0, len(timed), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert [list(o) for o in result.orders] == rounds  # the recorded orders are the ones run
    assert len(result.rounds) == 4 and result.warmup == 2
    assert all(list(r) == ["a", "b", "c"] for r in result.rounds)  # keyed in the settings' order


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7])
def test_the_order_balances_place_and_predecessor(n: int) -> None:
    """Williams design: over n rounds (2n for odd n) every setting holds every place equally
    often and, within the rounds, follows every other setting equally often (a rotation would
    keep each setting behind the same one, so one setting's after-effect hits one other)."""
    names = [chr(ord("a") + i) for i in range(n)]
    rounds = n if n % 2 == 0 else 2 * n
    orders = [round_order(names, r) for r in range(rounds)]
    for order in orders:
        assert sorted(order) == names
    for position in range(n):
        counts = {name: sum(o[position] == name for o in orders) for name in names}
        assert set(counts.values()) == {rounds // n}
    follows: dict[tuple[str, str], int] = {}
    for order in orders:
        for before, after in itertools.pairwise(order):
            follows[(before, after)] = follows.get((before, after), 0) + 1
    assert len(follows) == n * (n - 1)  # every ordered pair of different settings occurs
    assert set(follows.values()) == {rounds // n}


def test_the_order_rotates_so_no_setting_always_goes_first() -> None:
    assert [round_order(["a", "b"], r) for r in range(4)] == [("a", "b"), ("b", "a"), ("a", "b"), ("b", "a")]
    names = ["a", "b", "c", "d"]
    orders = [round_order(names, r) for r in range(4)]
    for position in range(4):  # over len(names) rounds, each setting holds each place once
        assert sorted(o[position] for o in orders) == names
    calls: list[str] = []
    paired_timing(recording(calls, ["x", "y"]), "x", pairs=4, warmup=0, cpu_clock=None)
    assert calls == ["x", "y", "y", "x", "x", "y", "y", "x"]


def test_ratios_pair_calls_of_the_same_round_under_a_drifting_clock() -> None:
    # the machine slows down: every call in round r costs (r + 1) x its base cost, and the calls
    # run in a rotated order; the true ratio b / a is 3 in every round
    clock, base = FakeClock(), {"a": 1.0, "b": 3.0, "c": 0.5}
    state = {"round": 0, "calls": 0}

    def make(name: str):
        def call() -> None:
            clock.tick(base[name] * (state["round"] + 1))
            state["calls"] += 1
            if state["calls"] % len(base) == 0:
                state["round"] += 1

        return call

    result = paired_timing({n: make(n) for n in base}, "a", pairs=5, warmup=1, clock=clock, cpu_clock=None)
    # the warm-up round ran at speed 1, the timed rounds at 2..6
    assert result.values("a") == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert result.ratios("b") == pytest.approx([3.0] * 5)
    summary = result.summary("b")
    assert summary.ratio_median == pytest.approx(3.0)
    assert summary.ratio_min == pytest.approx(3.0) and summary.ratio_max == pytest.approx(3.0)
    assert summary.ratio_q1 == pytest.approx(3.0) and summary.ratio_q3 == pytest.approx(3.0)
    assert (summary.median, summary.min, summary.max) == (12.0, 6.0, 18.0)
    assert result.summary("c").ratio_median == pytest.approx(0.5)
    assert result.summary("a").ratio_median == 1.0
    # the ratio to another setting comes from the same rounds
    assert result.summary("b", reference="c").ratio_median == pytest.approx(6.0)


def test_paired_ratio_differs_from_the_ratio_of_medians_when_the_machine_drifts() -> None:
    # the machine is slow in rounds 1-2 for both settings, and x alone is slow in round 3: the
    # medians of the unpaired values land on different rounds, the per-round ratios do not
    seconds = {"ref": [1.0, 10.0, 10.0, 1.0, 1.0], "x": [2.0, 20.0, 20.0, 20.0, 2.0]}
    clock, index = FakeClock(), {"ref": 0, "x": 0}

    def make(name: str):
        def call() -> None:
            clock.tick(seconds[name][index[name]])
            index[name] += 1

        return call

    settings = {n: make(n) for n in ("ref", "x")}
    result = paired_timing(settings, "ref", pairs=5, warmup=0, clock=clock, cpu_clock=None)
    paired = result.summary("x").ratio_median
    unpaired = statistics.median(result.values("x")) / statistics.median(result.values("ref"))
    assert result.ratios("x") == pytest.approx([2.0, 2.0, 2.0, 20.0, 2.0])
    assert paired == pytest.approx(2.0)
    assert unpaired == pytest.approx(20.0)


def test_a_callable_that_times_itself_replaces_the_clock() -> None:
    clock = FakeClock()

    def setup_then_work() -> float:
        clock.tick(100.0)  # set-up the callable does not count
        clock.tick(2.0)
        return 2.0

    def plain() -> None:
        clock.tick(1.0)

    result = paired_timing({"ref": plain, "own": setup_then_work}, "ref", pairs=3, warmup=0, clock=clock)
    assert result.values("own") == [2.0, 2.0, 2.0]
    assert result.summary("own").ratio_median == 2.0
    assert result.summary("own").cpu_median is None  # CPU time around the call would include set-up
    assert result.summary("ref").cpu_median is not None


def test_quantiles_and_spread() -> None:
    assert quantile([1.0], 0.5) == 1.0
    assert quantile([1.0, 3.0], 0.5) == 2.0
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.25) == 2.0
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.75) == pytest.approx(3.25)
    with pytest.raises(ValueError):
        quantile([], 0.5)
    clock, costs = FakeClock(), iter([1.0, 1.0, 1.0, 2.0, 1.0, 3.0, 1.0, 4.0])

    def call() -> None:
        clock.tick(next(costs))

    result = paired_timing({"r": call, "x": call}, "r", pairs=4, warmup=0, clock=clock, cpu_clock=None)
    # orders r x, x r, r x, x r take the costs in call order: (r, x) = (1, 1), (2, 1), (1, 3), (4, 1)
    assert result.ratios("x") == [1.0, 0.5, 3.0, 0.25]
    ratios = sorted(result.ratios("x"))
    s = result.summary("x")
    assert (s.ratio_min, s.ratio_max) == (ratios[0], ratios[-1])
    assert s.ratio_median == pytest.approx(quantile(ratios, 0.5))
    assert s.ratio_q1 <= s.ratio_median <= s.ratio_q3
    assert s.ratio_text().count("(") == 1
    record = result.to_dict()
    assert record["pairs"] == 4 and len(record["orders"]) == 4 and set(record["summary"]) == {"r", "x"}
    json.dumps(record)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="reference"):
        paired_timing({"a": lambda: None}, "b", pairs=1)
    with pytest.raises(ValueError, match="pairs"):
        paired_timing({"a": lambda: None}, "a", pairs=0)
    assert math.isnan(
        paired_timing({"a": lambda: 0.0, "b": lambda: 1.0}, "a", pairs=1, warmup=0).ratios("b")[0]
    )
    assert "3 rounds" in method_note(3, 1, "a")


def test_processes_are_interleaved_with_the_os_accounting() -> None:
    script = (
        "import json, sys\n"
        "size = int(sys.argv[2])\n"
        "block = b'x' * (size * 1024 * 1024)  # written: resident\n"
        "print(json.dumps({'name': sys.argv[1]}))\n"
    )
    commands = {
        "small": [sys.executable, "-c", script, "small", "0"],
        "big": [sys.executable, "-c", script, "big", "100"],
    }
    seen: list[str] = []

    def report(r: int, name: str, m: Measurement) -> None:
        seen.append(json.loads(m.output)["name"])

    ballast = b"x" * (300 * 1024 * 1024)  # this process is big: its children must not inherit that
    result = paired_processes(commands, "small", pairs=2, warmup=0, report=report)
    del ballast
    assert seen == ["small", "big", "big", "small"]
    big, small = result.values("big", "peak_rss_mb"), result.values("small", "peak_rss_mb")
    assert all(s < 100 for s in small)  # the child's own peak, not this process's size
    assert all(b - s > 80 for b, s in zip(big, small, strict=True))
    assert all(c is not None and c >= 0 for c in (m.cpu_seconds for r in result.rounds for m in r.values()))
    assert result.summary("big", key="peak_rss_mb").ratio_median > 1
    with pytest.raises(Exception, match="returned non-zero"):
        paired_processes({"bad": [sys.executable, "-c", "raise SystemExit(3)"]}, "bad", pairs=1)
