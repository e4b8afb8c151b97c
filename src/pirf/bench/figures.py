"""The bench's figures, per benchmark, from its cell and sample files and its training runs.

- ``samples_<b>.png`` / ``residuals_<b>.png``: the first samples of every baseline row at the
  smallest step count (the same latents in every row), and their |residual| maps;
- ``hacking_<b>.png``: the reward-hacking gallery, PIRF beside its ablations without layer
  truncation or weight regularization (and the data);
- ``steps_<b>.png``: median residual against the sampler's step count, one line per row;
- ``curves_<b>.png``: held-out residual and fidelity score during each PIRF fine-tune.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pirf import pdes
from pirf.bench.config import ABLATIONS, BASELINES, FAMILY
from pirf.bench.table import read_cells
from pirf.evaluation.figures import plot_residuals, plot_samples, save_figure
from pirf.files import read_jsonl

GALLERY = ("data", "pirf", "pirf-all", "pirf-noreg", "pirf-online", "pirf-inverse")


def _blocks(out: Path, benchmark: str, rows, steps: int) -> list[tuple[str, np.ndarray]]:
    blocks = []
    for row in rows:
        path = out / "samples" / benchmark / f"{row}@{steps}.npy"
        if path.exists():
            blocks.append((row, np.load(path)))
    return blocks


def plot_steps(cells: list[dict], benchmark: str) -> Figure | None:
    series: dict[str, list[tuple[int, float]]] = {}
    for c in cells:
        residual = c["residual"].get("all")
        if c["benchmark"] == benchmark and residual is not None and c["method"] != "data":
            series.setdefault(c["method"], []).append((c["steps"], residual))
    series = {k: sorted(v) for k, v in series.items() if len(v) > 1}
    if not series:
        return None
    fig = Figure(figsize=(5.2, 3.6), layout="constrained")
    ax = fig.subplots()
    for method, points in series.items():
        ax.plot(*zip(*points, strict=True), marker="o", label=method)
    data = [c["residual"].get("all") for c in cells if c["benchmark"] == benchmark and c["method"] == "data"]
    if data and data[0] is not None:
        ax.axhline(data[0], color="black", linestyle="--", linewidth=1, label="data")
    ax.set(
        xscale="log", yscale="log", xlabel="sampler steps N", ylabel="median residual MSE", title=benchmark
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_curves(out: Path, benchmark: str) -> Figure | None:
    runs = {}
    for row in ("pirf", *ABLATIONS):
        path = out / "models" / benchmark / row / "evals.jsonl"
        if path.exists():
            evals = [e for e in read_jsonl(path) if e.get("weights") == "ema" and e.get("finite", True)]
            if evals:
                runs[row] = evals
    if not runs:
        return None
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for row, evals in runs.items():
        its = [e["iteration"] for e in evals]
        left.plot(its, [e["residual"] for e in evals], marker=".", label=row)
        right.plot(its, [e["fidelity"] for e in evals], marker=".", label=row)
    left.set(
        yscale="log", xlabel="iteration", ylabel="held-out median residual MSE", title=f"{benchmark}: reward"
    )
    right.set(xlabel="iteration", ylabel="fidelity score (lower is better)", title=f"{benchmark}: fidelity")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    left.legend(fontsize=7)
    return fig


def timed_costs(out: Path, benchmark: str) -> dict[str, float]:
    """Seconds per iteration of each family row timed alone (``benchmarks/family_cost.py`` writes
    OUT/family_cost_<benchmark>.json); empty when that has not been run."""
    path = out / f"family_cost_{benchmark}.json"
    if not path.exists():
        return {}
    return {row: float(s) for row, s in json.loads(path.read_text())["seconds_per_iteration"].items()}


def family_curves(out: Path, benchmark: str) -> dict[str, list[dict[str, float]]]:
    """Per family row (and pirf): its held-out evaluations with the trajectories and training
    seconds spent when each was taken (from the run's evals.jsonl, metrics.jsonl, config.json).
    Where the row was timed alone (`timed_costs`), seconds = iteration x that cost; otherwise the
    run's own clock, which counts whatever else shared the machine and the periodic evaluations."""
    runs, costs = {}, timed_costs(out, benchmark)
    for row in ("pirf", *FAMILY):
        folder = out / "models" / benchmark / row
        if not (folder / "evals.jsonl").exists() or not (folder / "config.json").exists():
            continue
        batch = json.loads((folder / "config.json").read_text())["batch_size"]
        metrics = read_jsonl(folder / "metrics.jsonl")
        clock = {m["iteration"]: m["seconds"] for m in metrics}
        points = []
        for e in read_jsonl(folder / "evals.jsonl"):
            if e.get("weights") not in ("base", "ema") or not e.get("finite", True):
                continue
            it = e["iteration"]
            if row in costs:
                seconds = it * costs[row]
            elif it == 0:
                seconds = 0.0
            else:
                seconds = clock.get(it, max((s for i, s in clock.items() if i <= it), default=None))
            if seconds is not None:
                points.append(
                    {
                        "trajectories": it * batch,
                        "seconds": seconds,
                        "residual": e["residual"],
                        "fidelity": e["fidelity"],
                    }
                )
        if points:
            runs[row] = points
    return runs


def plot_family(out: Path, benchmark: str, tolerance: float = 0.2) -> Figure | None:
    """Held-out residual against trajectories and against training seconds, one line per method
    (a black-box row dashed, in its method's colour); hollow markers where the fidelity guard
    (within ``tolerance`` of the base) fails."""
    runs = family_curves(out, benchmark)
    if len(runs) < 2:
        return None
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    methods = list(dict.fromkeys(row.removesuffix("-bb") for row in runs))
    for row, points in runs.items():
        base_fidelity = points[0]["fidelity"]
        style = {  # a method's black-box row: its colour, dashed
            "color": f"C{methods.index(row.removesuffix('-bb')) % 10}",
            "linestyle": "--" if row.endswith("-bb") else "-",
        }
        for ax, key in zip(axes, ("trajectories", "seconds"), strict=True):
            line = ax.plot([p[key] for p in points], [p["residual"] for p in points], label=row, **style)[0]
            bad = [p for p in points if p["fidelity"] > base_fidelity * (1 + tolerance)]
            ax.scatter(
                [p[key] for p in bad],
                [p["residual"] for p in bad],
                facecolors="none",
                edgecolors=line.get_color(),
            )
    axes[0].set(xlabel="trajectories sampled", ylabel="held-out median residual MSE")
    timed = "each method timed alone" if timed_costs(out, benchmark) else "the run's own clock"
    axes[1].set(xlabel=f"training seconds ({timed})")
    for ax in axes:
        ax.set(yscale="log", title=benchmark)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    return fig


def write_figures(out: Path, benchmark: str, pde: pdes.PDE) -> list[Path]:
    """Write the figures of ``benchmark`` that its finished cells allow; returns their paths."""
    cells = read_cells(out)
    mine = [c for c in cells if c["benchmark"] == benchmark]
    if not mine:
        return []
    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    steps = min(c["steps"] for c in mine)
    written = []
    note = "model rows: samples 0.. from the same latents (seed 0); data: held-out solver samples 0.."
    baselines = _blocks(out, benchmark, BASELINES, steps)
    if baselines:
        title = f"{benchmark}: the baselines at {steps} steps"
        figure = plot_samples(pde, baselines, title=title, note=note)
        written.append(save_figure(figure, folder / f"samples_{benchmark}.png"))
        figure = plot_residuals(pde, baselines, title=f"{title}: |PDE residual|", note=note)
        written.append(save_figure(figure, folder / f"residuals_{benchmark}.png"))
    gallery = _blocks(out, benchmark, GALLERY, steps)
    if len(gallery) > 2:
        title = f"{benchmark}: PIRF beside its ablations at {steps} steps (reward hacking)"
        figure = plot_samples(pde, gallery, title=title, note=note)
        written.append(save_figure(figure, folder / f"hacking_{benchmark}.png"))
    figures = (
        ("steps", plot_steps(cells, benchmark)),
        ("curves", plot_curves(out, benchmark)),
        ("family", plot_family(out, benchmark)),
    )
    for name, fig in figures:
        if fig is not None:
            written.append(save_figure(fig, folder / f"{name}_{benchmark}.png"))
    return written


__all__ = ["family_curves", "plot_curves", "plot_family", "plot_steps", "timed_costs", "write_figures"]
