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
from pirf.bench.config import ABLATIONS, BASELINES
from pirf.bench.table import read_cells
from pirf.evaluation.report import plot_residuals, plot_samples, save_figure

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
            evals = [json.loads(ln) for ln in path.read_text().splitlines() if ln]
            evals = [e for e in evals if e.get("weights") == "ema" and e.get("finite", True)]
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
    baselines = _blocks(out, benchmark, BASELINES, steps)
    if baselines:
        written.append(save_figure(plot_samples(pde, baselines), folder / f"samples_{benchmark}.png"))
        written.append(save_figure(plot_residuals(pde, baselines), folder / f"residuals_{benchmark}.png"))
    gallery = _blocks(out, benchmark, GALLERY, steps)
    if len(gallery) > 2:
        written.append(save_figure(plot_samples(pde, gallery), folder / f"hacking_{benchmark}.png"))
    for name, fig in (("steps", plot_steps(cells, benchmark)), ("curves", plot_curves(out, benchmark))):
        if fig is not None:
            written.append(save_figure(fig, folder / f"{name}_{benchmark}.png"))
    return written


__all__ = ["plot_curves", "plot_steps", "write_figures"]
