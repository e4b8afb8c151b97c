"""The bench table from its cell files: ``table.json`` (every cell), ``table.csv`` (one flat line a
cell) and ``table.md`` (a headline table and one detailed table per benchmark).

Ratios are taken against the ``base`` row of the same benchmark and step count: ``x below base``
= base residual / row residual (higher is better), ``fidelity / base`` = row fidelity score /
base's (lower is better; 1.2 is PIRF's 20% guard).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from pirf.bench.config import ROWS
from pirf.evaluation.report import _num, atomic_write, markdown_table, write_json

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
    "diversity",
    "seconds_per_100",
    "network_calls_per_sample",
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


def with_ratios(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells with ``x_below_base`` and ``fidelity_over_base`` (against the same benchmark and steps)."""
    base = {(c["benchmark"], c["steps"]): c for c in cells if c["method"] == "base"}
    out = []
    for c in cells:
        b = base.get((c["benchmark"], c["steps"]))
        mine = c["residual"].get("all")
        extra = {
            "x_below_base": _ratio(b["residual"].get("all"), mine) if b and mine else None,
            "fidelity_over_base": _ratio(c.get("fidelity"), b.get("fidelity")) if b else None,
        }
        out.append(c | extra)
    return out


def _flat(c: dict[str, Any]) -> dict[str, Any]:
    cost, residual = c.get("cost") or {}, c["residual"]
    return {
        **{k: c.get(k) for k in ("benchmark", "method", "steps", "n", "nonfinite")},
        **{f"residual_{r}": residual.get(r) for r in ("all", "interior", "boundary", "interface")},
        **{
            k: c.get(k)
            for k in ("x_below_base", "fidelity", "fidelity_over_base", "diversity", "train_seconds")
        },
        "seconds_per_100": cost.get("seconds_per_100"),
        "network_calls_per_sample": cost.get("network_calls_per_sample"),
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


def headline(cells: list[dict[str, Any]]) -> str:
    """Median residual MSE per method (rows) and benchmark x step count (columns)."""
    columns = sorted({(c["benchmark"], c["steps"]) for c in cells})
    by = {(c["method"], c["benchmark"], c["steps"]): c for c in cells}
    methods = [r for r in ROWS if any(c["method"] == r for c in cells)]
    headers = ["method", *[f"{b} N={s}" for b, s in columns]]
    rows = [
        [m, *[_num(by[(m, *col)]["residual"].get("all")) if (m, *col) in by else "" for col in columns]]
        for m in methods
    ]
    return markdown_table(headers, rows)


def detail(cells: list[dict[str, Any]], benchmark: str) -> str:
    """One benchmark's cells: residual (all, interior), x below base, fidelity, diversity, cost."""
    headers = [
        "method",
        "N",
        "residual",
        "interior",
        "x below base",
        "fidelity",
        "fid. / base",
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
                _num(c["residual"].get("all")),
                _num(c["residual"].get("interior")),
                _num(c.get("x_below_base"), ".2f"),
                _num(c.get("fidelity")),
                _num(c.get("fidelity_over_base"), ".2f"),
                _num(c.get("diversity"), ".2f"),
                _num(cost.get("seconds_per_100"), ".2f"),
                _num(cost.get("network_calls_per_sample"), "d"),
                "yes" if cost.get("gradients") else "no",
                _setting(c.get("setting")),
            ]
        )
    return markdown_table(headers, rows)


def markdown(cells: list[dict[str, Any]]) -> str:
    parts = [
        "# pirf bench",
        "",
        "Median residual MSE (physical units, all pixels) per method and benchmark at N sampler steps.",
        "",
    ]
    parts += [headline(cells), ""]
    for benchmark in sorted({c["benchmark"] for c in cells}):
        parts += [f"## {benchmark}", "", detail(cells, benchmark), ""]
    return "\n".join(parts)


def write_tables(out: Path) -> dict[str, Any]:
    """Write table.json, table.csv and table.md from the cells in ``out``; returns the JSON."""
    cells = with_ratios(read_cells(out))
    table = {"cells": cells}
    write_json(out / "table.json", table)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(_flat(c) for c in cells)
    atomic_write(out / "table.csv", lambda tmp: tmp.write_text(buffer.getvalue()))
    atomic_write(out / "table.md", lambda tmp: tmp.write_text(markdown(cells)))
    return table


__all__ = ["detail", "headline", "markdown", "read_cells", "with_ratios", "write_tables"]
