"""Markdown of ``pirf evaluate``'s ``report.md``: tables (`markdown_table`), the summary rows
(`summary_rows`, also the CLI's table), and per step count the residual against the data floor,
the fidelity terms per channel and the cost (`markdown_report`)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any


def num(value: Any, fmt: str = ".3g") -> str:
    """``value`` formatted with ``fmt`` for a table, "—" when missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, fmt)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table of ``headers`` and ``rows`` of cell texts."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the one-line-per-step-count summary (the CLI table and report.md)."""
    regions = list(report.get("floor", {}))
    headers = ["steps", "calls/sample", *[f"{r} /floor" for r in regions], "fidelity", "memo.", "samples/s"]
    rows = []
    for run in report["runs"]:
        fidelity = run.get("fidelity") or {}
        memo = fidelity.get("memorization", {}).get("ratio")
        rows.append(
            [
                str(run["steps"]),
                str(run["cost"]["network_calls_per_sample"]),
                *[num(run["ratio_to_floor"].get(r), ".3g") for r in regions],
                num(fidelity.get("fidelity_score"), ".3f"),
                num(memo, ".2f"),
                num(run["cost"]["samples_per_s"], ".2f"),
            ]
        )
    return headers, rows


def _residual_section(run: dict[str, Any], floor: dict[str, dict[str, float]]) -> str:
    rows = []
    for region, s in run["residual"].items():
        f = floor.get(region, {})
        rows.append(
            [
                region,
                num(s["mean_mse"], ".3e"),
                num(s["median_mse"], ".3e"),
                num(s["mean_mae"], ".3e"),
                num(f.get("median_mse"), ".3e"),
                num(run["ratio_to_floor"].get(region), ".3g"),
                num(run["mean_ratio_to_floor"].get(region), ".3g"),
            ]
        )
    headers = [
        "region",
        "mean MSE",
        "median MSE",
        "mean MAE",
        "floor median MSE",
        "ratio (median)",
        "ratio (mean)",
    ]
    return markdown_table(headers, rows)


def _fidelity_section(fidelity: dict[str, Any], fields: Sequence[str]) -> str:
    """Every fidelity term per channel and over all channels (the guard judges each channel's
    spectrum, std and amplitude errors: `pirf.evaluation.guard`), then diversity, phases, score."""
    m, spec, sw = fidelity["moments"], fidelity["spectrum_error"], fidelity["sliced_wasserstein"]
    div = fidelity["diversity"]
    per_channel = div.get("channel_ratio", {})
    rows = [
        [
            name,
            num(m[name]["mean_error"]),
            num(m[name]["std_error"]),
            num(m[name]["amplitude_error"]),
            num(spec[name]),
            num(sw[name]),
            num(per_channel.get(name)),
        ]
        for name in fields
    ]
    a = m["all"]
    rows.append(
        [
            "all",
            num(a["mean_error"]),
            num(a["std_error"]),
            num(a["amplitude_error"]),
            num(spec["all"]),
            num(sw["all"]),
            num(div.get("ratio")),
        ]
    )
    headers = [
        "channel",
        "mean error",
        "std error",
        "amplitude error",
        "spectrum error (dex)",
        "sliced W1",
        "diversity ratio",
    ]
    lines = [markdown_table(headers, rows), ""]
    lines.append(
        f"- diversity: mean pairwise distance {num(div['mean_distance'])} "
        f"(reference {num(div.get('reference_mean_distance'))}, ratio {num(div.get('ratio'))})"
    )
    if "phases" in fidelity:
        p = fidelity["phases"]
        lines.append(
            f"- Darcy phases: high-phase share {num(p['sample_share'])} (reference "
            f"{num(p['reference_share'])}), off-phase pixels {num(p['sample_off_phase'])}"
        )
    terms = ", ".join(f"{k} {num(v)}" for k, v in fidelity["score_terms"].items())
    lines.append(
        f"- **fidelity score {num(fidelity['fidelity_score'], '.3f')}** (0 = the data; terms: {terms})"
    )
    if "memorization" in fidelity:
        mem = fidelity["memorization"]
        lines.append(
            f"- memorization: nearest training field at {num(mem['mean'])} (median {num(mem['median'])}, "
            f"min {num(mem['min'])}); the training set's own {num(mem['train_mean'])}; "
            f"ratio {num(mem['ratio'])} (~1 fresh, ~0 copies)"
        )
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    """``report.md``: model, data, a summary table, then per step count: residual vs floor,
    fidelity, cost."""
    model, settings = report["model"], report["settings"]
    fields = model.get("fields") or []
    trained = num(model.get("train_seconds"), ".0f")
    res = model["resolution"]
    lines = [
        f"# Evaluation: {model['pde']} {res}x{res}, {model.get('kind')} model",
        "",
        f"- model: `{model['path']}` ({model.get('stage')}, step {model.get('step')}, trained {trained} s)",
        f"- PDE parameters: `{json.dumps(model.get('pde_params', {}))}`",
        f"- sampling: {settings['sampler']}, {settings['n']} samples, seed {settings['seed']}, "
        f"batch size {settings['batch_size']}",
        f"- reference: `{report['reference']['path']}`: {report['reference']['n']} samples, "
        f"{report['reference']['source']}",
        "- training set (memorization): "
        + (f"`{report['train']['path']}`, " if report["train"].get("path") else "")
        + report["train"]["note"],
        f"- floor: residual of {report['floor_source']}; ratio = samples' median MSE / floor's median "
        "MSE per region (< 1: below the data there)",
        "",
        "## Summary",
        "",
        markdown_table(*summary_rows(report)),
        "",
    ]
    for run in report["runs"]:
        cost = run["cost"]
        lines += [f"## {run['steps']} steps", ""]
        if run["nonfinite"]:
            lines += [f"**{run['nonfinite']} of {run['n']} samples are NaN/inf** (left out below).", ""]
        if run["residual"]:
            lines += ["### Residual vs the data floor", "", _residual_section(run, report["floor"]), ""]
        if run.get("fidelity"):
            lines += ["### Fidelity to the reference", "", _fidelity_section(run["fidelity"], fields), ""]
        lines += [
            "### Cost",
            "",
            markdown_table(
                ["network calls / sample", "network calls", "wall s", "samples/s", "device"],
                [
                    [
                        str(cost["network_calls_per_sample"]),
                        str(cost["network_calls"]),
                        num(cost["seconds"], ".2f"),
                        num(cost["samples_per_s"], ".2f"),
                        cost["device"],
                    ]
                ],
            ),
            "",
        ]
    return "\n".join(lines)


__all__ = ["markdown_report", "markdown_table", "num", "summary_rows"]
