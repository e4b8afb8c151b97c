"""The bench table from its cell files: ``table.json`` (every cell), ``table.csv`` (one flat line a
cell) and ``table.md`` (a headline table and one detailed table per benchmark).

Ratios are taken against the ``base`` row of the same benchmark and step count: ``x below base``
= base residual / row residual (higher is better), ``fidelity / base`` = row fidelity score /
base's (lower is better; 1.2 is PIRF's 20% guard). Beside the composite, every row is judged by the
fidelity guard against that base row, channel by channel (`pirf.evaluation.guard`, with the
bench's tolerances): ``worst channel`` is the judged per-channel term nearest to or furthest past
its limit (base -> row), ``guard`` says which channel and term the guard refuses. A row the guard
refuses is marked ``✗`` in the headline table. Cells written before per-channel terms were kept
are judged on the composite alone.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from pirf.bench.config import ROWS
from pirf.evaluation.guard import GuardTolerances, Score
from pirf.evaluation.markdown import markdown_table, num
from pirf.evaluation.report import write_json
from pirf.files import atomic_write

CSV_FIELDS = (
    "benchmark",
    "method",
    "steps",
    "n",
    "nonfinite",
    "residual_all",
    "residual_interior",
    "residual_boundary",
    "residual_interface",
    "x_below_base",
    "fidelity",
    "fidelity_over_base",
    "worst_channel",
    "guard_admissible",
    "guard_failures",
    "diversity",
    "seconds_per_100",
    "network_calls_per_sample",
    "residual_gradients_per_sample",
    "gradients_at_test_time",
    "train_seconds",
    "setting",
)


def read_cells(out: Path) -> list[dict[str, Any]]:
    """Every cell of a bench folder, in (benchmark, row order, steps) order."""
    cells = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*/*.json"))]
    order = {row: i for i, row in enumerate(ROWS)}
    return sorted(cells, key=lambda c: (c["benchmark"], order.get(c["method"], len(order)), c["steps"]))


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def with_ratios(
    cells: list[dict[str, Any]], tolerances: GuardTolerances | None = None
) -> list[dict[str, Any]]:
    """Cells with ``x_below_base``, ``fidelity_over_base``, ``guard`` (the fidelity guard's verdict)
    and ``worst_channel`` (against the base row of the same benchmark and steps)."""
    base = {(c["benchmark"], c["steps"]): c for c in cells if c["method"] == "base"}
    tolerances = tolerances or GuardTolerances()
    out = []
    for c in cells:
        b = base.get((c["benchmark"], c["steps"]))
        mine, score = c["residual"].get("all"), Score.from_mapping(c)
        worst = score.worst_channel(b, tolerances) if b else None
        extra = {
            "x_below_base": _ratio(b["residual"].get("all"), mine) if b and mine else None,
            "fidelity_over_base": _ratio(c.get("fidelity"), b.get("fidelity")) if b else None,
            "guard": score.judge(b, tolerances).to_dict() if b else None,
            "worst_channel": None
            if worst is None
            else {**vars(worst), "ratio": worst.ratio, "text": worst.short()},
        }
        out.append(c | extra)
    return out


def _guard(c: dict[str, Any]) -> str:
    """``ok``, or the refused channel terms (``f spectrum``; ``score`` for the composite)."""
    guard = c.get("guard")
    if guard is None:
        return ""
    if guard["admissible"]:
        return "ok" if guard.get("per_channel") else "ok (score only)"
    return "✗ " + "; ".join(guard["failures"])


def _flat(c: dict[str, Any]) -> dict[str, Any]:
    cost, residual = c.get("cost") or {}, c["residual"]
    return {
        **{k: c.get(k) for k in ("benchmark", "method", "steps", "n", "nonfinite")},
        **{f"residual_{r}": residual.get(r) for r in ("all", "interior", "boundary", "interface")},
        **{
            k: c.get(k)
            for k in ("x_below_base", "fidelity", "fidelity_over_base", "diversity", "train_seconds")
        },
        "worst_channel": (c.get("worst_channel") or {}).get("text"),
        "guard_admissible": (c.get("guard") or {}).get("admissible"),
        "guard_failures": "; ".join((c.get("guard") or {}).get("failures", [])),
        "seconds_per_100": cost.get("seconds_per_100"),
        "network_calls_per_sample": cost.get("network_calls_per_sample"),
        "residual_gradients_per_sample": cost.get("residual_gradients_per_sample"),
        "gradients_at_test_time": cost.get("gradients"),
        "setting": json.dumps(c.get("setting") or {}, sort_keys=True),
    }


def _setting(setting: dict[str, Any] | None) -> str:
    if not setting:
        return ""
    text = ", ".join(
        f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in setting.items() if k != "admissible"
    )
    return text + ("" if setting.get("admissible", True) else " (no setting kept fidelity)")


def _calls(cost: dict[str, Any]) -> str:
    """Network calls per sample, with the residual gradients of PG-Diffusion's chain (``20 + 14 ∇R``)."""
    calls, gradients = (
        num(cost.get("network_calls_per_sample"), "d"),
        cost.get("residual_gradients_per_sample"),
    )
    return calls if gradients is None else f"{calls} + {gradients} ∇R"


def _refused(c: dict[str, Any]) -> bool:
    return c.get("guard") is not None and not c["guard"]["admissible"]


def headline(cells: list[dict[str, Any]]) -> str:
    """Median residual MSE per method (rows) and benchmark x step count (columns); ``✗`` marks a
    cell the fidelity guard refuses against the base row (per channel or on the score)."""
    columns = sorted({(c["benchmark"], c["steps"]) for c in cells})
    by = {(c["method"], c["benchmark"], c["steps"]): c for c in cells}
    methods = [r for r in ROWS if any(c["method"] == r for c in cells)]
    headers = ["method", *[f"{b} N={s}" for b, s in columns]]

    def entry(c: dict[str, Any]) -> str:
        return num(c["residual"].get("all")) + (" ✗" if _refused(c) else "")

    rows = [[m, *[entry(by[(m, *col)]) if (m, *col) in by else "" for col in columns]] for m in methods]
    return markdown_table(headers, rows)


def detail(cells: list[dict[str, Any]], benchmark: str) -> str:
    """One benchmark's cells: residual (all, interior), x below base, fidelity, its worst channel
    and the guard's verdict, diversity, cost."""
    headers = [
        "method",
        "N",
        "residual",
        "interior",
        "x below base",
        "fidelity",
        "fid. / base",
        "worst channel",
        "guard",
        "diversity",
        "s / 100 samples",
        "calls / sample",
        "grad at test",
        "setting",
    ]
    rows, mine = [], [c for c in cells if c["benchmark"] == benchmark]
    data = [c for c in mine if c["method"] == "data"]
    for c in (c for c in mine if c["method"] != "data" or c is data[0]):  # the data do not depend on N
        cost = c.get("cost") or {}
        rows.append(
            [
                c["method"],
                str(c["steps"]) if c["method"] != "data" else "—",
                num(c["residual"].get("all")),
                num(c["residual"].get("interior")),
                num(c.get("x_below_base"), ".2f"),
                num(c.get("fidelity")),
                num(c.get("fidelity_over_base"), ".2f"),
                (c.get("worst_channel") or {}).get("text", ""),
                _guard(c) if c["method"] != "base" else "",
                num(c.get("diversity"), ".2f"),
                num(cost.get("seconds_per_100"), ".2f"),
                _calls(cost),
                "yes" if cost.get("gradients") else "no",
                _setting(c.get("setting")),
            ]
        )
    return markdown_table(headers, rows)


def markdown(cells: list[dict[str, Any]]) -> str:
    parts = [
        "# pirf bench",
        "",
        "Median residual MSE (physical units, all pixels) per method and benchmark at N sampler steps; "
        "✗: the fidelity guard refuses the row against the base model (a channel's spectrum, std or "
        "amplitude error, or the score; see each benchmark's table).",
        "",
    ]
    parts += [headline(cells), ""]
    for benchmark in sorted({c["benchmark"] for c in cells}):
        parts += [f"## {benchmark}", "", detail(cells, benchmark), ""]
    return "\n".join(parts)


def bench_tolerances(out: Path) -> GuardTolerances:
    """The fidelity guard's tolerances of the bench in ``out`` (its ``config.json``; defaults
    where it has none)."""
    path = out / "config.json"
    return GuardTolerances.of(json.loads(path.read_text()) if path.exists() else {})


def write_tables(out: Path, tolerances: GuardTolerances | None = None) -> dict[str, Any]:
    """Write table.json, table.csv and table.md from the cells in ``out``; returns the JSON.
    Rows are judged with ``tolerances`` (default: the bench's own, `bench_tolerances`)."""
    cells = with_ratios(read_cells(out), tolerances or bench_tolerances(out))
    table = {"cells": cells}
    write_json(out / "table.json", table)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(_flat(c) for c in cells)
    atomic_write(out / "table.csv", lambda tmp: tmp.write_text(buffer.getvalue()))
    atomic_write(out / "table.md", lambda tmp: tmp.write_text(markdown(cells)))
    return table


__all__ = ["bench_tolerances", "detail", "headline", "markdown", "read_cells", "with_ratios", "write_tables"]
