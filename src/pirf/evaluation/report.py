"""Writers of ``pirf sample`` and ``pirf evaluate``: a sample file, JSON and Markdown reports, figures.

Every file is written under a temporary name in its folder and renamed into place
(`atomic_write`), so an interrupted run leaves no half-written result. Figures are drawn on
`matplotlib.figure.Figure` directly (no pyplot, no display, the Agg renderer for PNG).

Figures (a few samples, ``n_show``, the first ones: sample i depends only on (seed, i), so the
same columns at two step counts come from the same noise):

- ``samples.png``: one row per (set, channel), one column per sample; colour range per channel
  shared by all sets;
- ``residuals.png``: |PDE residual| per pixel of those samples, log colour scale shared by all;
- ``spectra.png``: radially averaged power spectrum per channel (`power_spectrum`), samples at
  each step count against the reference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from pirf import files, pdes
from pirf.data import DatasetWriter
from pirf.disk import field_bytes, require_space
from pirf.errors import NonFiniteError, OutputExistsError
from pirf.evaluation.metrics import finite_rows, power_spectrum
from pirf.files import atomic_write, jsonable, remove_stale_temporaries, temporary_path

if TYPE_CHECKING:
    from pirf.sampling.draw import SampleStream

EVALUATION_FILES = ("report.json", "report.md", "samples.png", "residuals.png", "spectra.png")
SAMPLE_FILES = ("samples.h5", "samples.png")
N_SHOW = 4
Block = tuple[str, np.ndarray]  # (label, physical fields [N, C, R, R])


# -- files -------------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """An evaluation's JSON-able ``report`` and the arrays its figures are drawn from."""

    report: dict[str, Any]
    samples: dict[int, np.ndarray]  # steps -> physical samples
    reference: np.ndarray
    pde: pdes.PDE


def check_outputs(out: Path, names: Iterable[str], overwrite: bool) -> None:
    """Refuse an ``out`` folder that already holds any of ``names`` (unless ``overwrite``), or
    that is a file."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder", "give --out a folder path")
    existing = [name for name in names if (out / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{out} already holds results ({', '.join(existing)})",
            "choose another --out, or pass --overwrite",
        )


def write_json(path: Path, obj: Any) -> Path:
    """``obj`` as strict JSON (numpy values converted, no NaN), written atomically."""
    return files.write_json(path, jsonable(obj), allow_nan=False)


def save_figure(fig: Figure, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


# -- the sample file ---------------------------------------------------------------------------------
def write_sample_file(
    path: Path,
    batches: Iterable[np.ndarray],
    n: int,
    resolution: int,
    pde: pdes.PDE,
    floor: dict[str, dict[str, float]],
    provenance: Callable[[], dict[str, Any]],
    *,
    overwrite: bool = False,
    seed: int = -1,
    nonfinite_fix: str = "the model diverged: use another checkpoint, or more sampler steps",
) -> Path:
    """``n`` samples, given as ``batches`` of physical fields ``[b, C, R, R]`` and written as they
    come (memory: one batch), as a pirf data file (`DatasetWriter` layout) whose ``floor``
    attribute is ``floor`` (the model's data floor, so ``pirf data check`` compares the samples
    with the data), the samples' own residual statistics in ``residual`` and ``provenance()``
    (called after the last batch) in ``sampling`` (JSON). Without a floor the attribute is left
    out and ``pirf data check`` compares with freshly solved samples instead. A batch holding
    NaN or inf stops the write (`NonFiniteError` with ``nonfinite_fix``) and leaves no file."""
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists", "choose another --out, or pass --overwrite")
    require_space(path, field_bytes(n, len(pde.fields), resolution), f"writing {path.name}")
    remove_stale_temporaries(path)  # of killed runs
    staged = temporary_path(path)  # the name remove_stale_temporaries knows
    try:
        with DatasetWriter(staged, pde, n, resolution, seed=seed, solver="pirf sample") as writer:
            for batch in batches:
                bad = np.nonzero(~np.isfinite(batch).all(axis=(1, 2, 3)))[0] + writer.written
                if len(bad):
                    raise NonFiniteError(
                        f"samples {bad[:5].tolist()}{' ...' if len(bad) > 5 else ''} of {n} contain "
                        "NaN or inf",
                        nonfinite_fix,
                    )
                writer.write(batch)
        record = jsonable(provenance())
        with h5py.File(staged, "a") as f:
            f.attrs["solver"] = f"pirf sample: {record.get('sampler', '?')} {record.get('steps', '?')} steps"
            f.attrs["residual"] = f.attrs["floor"]  # the samples' own statistics
            if floor:
                f.attrs["floor"] = json.dumps(floor)
            else:
                del f.attrs["floor"]
            f.attrs["sampling"] = json.dumps(record)
        files.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    return path


def sample_file_residual(path: Path) -> dict[str, dict[str, float]]:
    """The samples' own residual statistics recorded in a sample file (`write_sample_file`)."""
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["residual"])


def write_sample_files(
    out: Path,
    stream: SampleStream,
    pde: pdes.PDE,
    record: dict[str, Any],
    provenance: Callable[[], dict[str, Any]],
    *,
    overwrite: bool = False,
    nonfinite_fix: str = "the model diverged: use another checkpoint, or more sampler steps",
) -> Path:
    """Draw ``stream`` into ``out/samples.h5`` (`write_sample_file`) and plot its first samples
    to ``out/samples.png``; returns the .h5 path."""
    check_outputs(out, SAMPLE_FILES, overwrite)
    floor = record.get("data", {}).get("floor") or {}
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        path = write_sample_file(
            out / "samples.h5",
            stream,
            stream.n,
            int(record["resolution"]),
            pde,
            floor,
            provenance,
            overwrite=overwrite,
            seed=stream.seed,
            nonfinite_fix=nonfinite_fix,
        )
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # a failed draw leaves no trace
        raise
    drawn = stream.samples()
    save_figure(plot_samples(pde, [(f"{drawn.steps} steps", drawn.fields)]), out / "samples.png")
    return path


# -- figures -----------------------------------------------------------------------------------------
def _finite(x: np.ndarray) -> np.ndarray:
    keep = finite_rows(x)
    return x if keep.all() else x[keep]


def plot_samples(pde: pdes.PDE, blocks: Sequence[Block], n_show: int = N_SHOW) -> Figure:
    """A grid of the first ``n_show`` fields of each block: rows (block, channel), columns samples."""
    cols = max(1, min(n_show, max(len(x) for _, x in blocks)))
    rows = [(label, c, x) for label, x in blocks for c in range(x.shape[1])]
    fig = Figure(figsize=(1.9 * cols + 1.2, 1.8 * len(rows)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), cols, squeeze=False))
    limits = []
    for c in range(len(pde.fields)):
        values = np.concatenate([x[:cols, c][np.isfinite(x[:cols, c])] for _, x in blocks] + [np.zeros(1)])
        limits.append((float(values.min()), float(values.max())))
    for r, (label, c, x) in enumerate(rows):
        image = None
        for k in range(cols):
            ax = axes[r, k]
            ax.set_xticks([])
            ax.set_yticks([])
            if k < len(x):
                image = ax.imshow(
                    x[k, c], origin="lower", cmap="viridis", vmin=limits[c][0], vmax=limits[c][1]
                )
            if r == 0:
                ax.set_title(f"sample {k}", fontsize=9)
        axes[r, 0].set_ylabel(f"{label}\n{pde.fields[c]}", fontsize=9)
        if image is not None:
            fig.colorbar(image, ax=axes[r, :].tolist(), shrink=0.85)
    return fig


def residual_maps(pde: pdes.PDE, x: np.ndarray) -> np.ndarray:
    """|residual| ``[N, H, W]`` in physical units after `PDE.project`, as the reward and the
    statistics see it (NaN for non-finite samples)."""
    out = np.full((len(x), x.shape[2], x.shape[3]), np.nan)
    ok = np.isfinite(x).all(axis=(1, 2, 3))
    if ok.any():
        with torch.no_grad():
            r = pde.residual(pde.project(torch.from_numpy(np.asarray(x[ok], dtype=np.float64))))
        out[ok] = r.abs().numpy()
    return out


def plot_residuals(pde: pdes.PDE, blocks: Sequence[Block], n_show: int = N_SHOW) -> Figure:
    """|PDE residual| maps of the first ``n_show`` fields of each block (one row per block), on
    one log colour scale (the boundary residual is in field units, the interior in equation units)."""
    cols = max(1, min(n_show, max(len(x) for _, x in blocks)))
    maps = [(label, residual_maps(pde, x[:cols])) for label, x in blocks]
    values = np.concatenate([m[np.isfinite(m) & (m > 0)] for _, m in maps] + [np.ones(0)])
    top = float(values.max()) if values.size else 1.0
    norm = LogNorm(vmin=max(float(values.min()) if values.size else top, top * 1e-8), vmax=top)
    fig = Figure(figsize=(1.9 * cols + 1.2, 1.8 * len(maps)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(maps), cols, squeeze=False))
    image = None
    for r, (label, m) in enumerate(maps):
        for k in range(cols):
            ax = axes[r, k]
            ax.set_xticks([])
            ax.set_yticks([])
            if k < len(m):
                image = ax.imshow(np.maximum(m[k], norm.vmin), origin="lower", cmap="magma", norm=norm)
            if r == 0:
                ax.set_title(f"sample {k}", fontsize=9)
        axes[r, 0].set_ylabel(label, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.85, label="|residual|")
    return fig


def plot_spectra(pde: pdes.PDE, blocks: Sequence[Block]) -> Figure:
    """Radially averaged power spectra P(k), k >= 1, one panel per channel, one line per block."""
    fig = Figure(figsize=(3.6 * len(pde.fields), 3.2), layout="constrained")
    axes = fig.subplots(1, len(pde.fields), squeeze=False)[0]
    for label, x in blocks:
        finite = _finite(x)
        if len(finite) == 0:
            continue
        spectrum = power_spectrum(finite)
        k = np.arange(1, spectrum.shape[1])
        for c, ax in enumerate(axes):
            style = {"color": "black", "linewidth": 2.0} if label == "reference" else {"linewidth": 1.2}
            ax.loglog(k, np.maximum(spectrum[c, 1:], 1e-300), label=label, **style)
    for c, ax in enumerate(axes):
        ax.set_title(pde.fields[c], fontsize=10)
        ax.set_xlabel("wavenumber k (cycles per domain)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("power P(k)")
    axes[0].legend(fontsize=8)
    return fig


# -- reports -----------------------------------------------------------------------------------------
def _num(value: Any, fmt: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, fmt)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
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
                *[_num(run["ratio_to_floor"].get(r), ".3g") for r in regions],
                _num(fidelity.get("fidelity_score"), ".3f"),
                _num(memo, ".2f"),
                _num(run["cost"]["samples_per_s"], ".2f"),
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
                _num(s["mean_mse"], ".3e"),
                _num(s["median_mse"], ".3e"),
                _num(s["mean_mae"], ".3e"),
                _num(f.get("median_mse"), ".3e"),
                _num(run["ratio_to_floor"].get(region), ".3g"),
                _num(run["mean_ratio_to_floor"].get(region), ".3g"),
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
            _num(m[name]["mean_error"]),
            _num(m[name]["std_error"]),
            _num(m[name]["amplitude_error"]),
            _num(spec[name]),
            _num(sw[name]),
            _num(per_channel.get(name)),
        ]
        for name in fields
    ]
    a = m["all"]
    rows.append(
        [
            "all",
            _num(a["mean_error"]),
            _num(a["std_error"]),
            _num(a["amplitude_error"]),
            _num(spec["all"]),
            _num(sw["all"]),
            _num(div.get("ratio")),
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
        f"- diversity: mean pairwise distance {_num(div['mean_distance'])} "
        f"(reference {_num(div.get('reference_mean_distance'))}, ratio {_num(div.get('ratio'))})"
    )
    if "phases" in fidelity:
        p = fidelity["phases"]
        lines.append(
            f"- Darcy phases: high-phase share {_num(p['sample_share'])} (reference "
            f"{_num(p['reference_share'])}), off-phase pixels {_num(p['sample_off_phase'])}"
        )
    terms = ", ".join(f"{k} {_num(v)}" for k, v in fidelity["score_terms"].items())
    lines.append(
        f"- **fidelity score {_num(fidelity['fidelity_score'], '.3f')}** (0 = the data; terms: {terms})"
    )
    if "memorization" in fidelity:
        mem = fidelity["memorization"]
        lines.append(
            f"- memorization: nearest training field at {_num(mem['mean'])} (median {_num(mem['median'])}, "
            f"min {_num(mem['min'])}); the training set's own {_num(mem['train_mean'])}; "
            f"ratio {_num(mem['ratio'])} (~1 fresh, ~0 copies)"
        )
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    """``report.md``: model, data, a summary table, then per step count: residual vs floor,
    fidelity, cost."""
    model, settings = report["model"], report["settings"]
    fields = model.get("fields") or []
    trained = _num(model.get("train_seconds"), ".0f")
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
                        _num(cost["seconds"], ".2f"),
                        _num(cost["samples_per_s"], ".2f"),
                        cost["device"],
                    ]
                ],
            ),
            "",
        ]
    return "\n".join(lines)


def write_evaluation(result: Evaluation, out: Path, *, overwrite: bool = False) -> dict[str, Path]:
    """``report.json``, ``report.md`` and the three figures of an evaluation, in ``out``."""
    check_outputs(out, EVALUATION_FILES, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    blocks = [("reference", result.reference), *((f"{s} steps", x) for s, x in result.samples.items())]
    paths = {
        "samples": save_figure(plot_samples(result.pde, blocks), out / "samples.png"),
        "residuals": save_figure(plot_residuals(result.pde, blocks), out / "residuals.png"),
        "spectra": save_figure(plot_spectra(result.pde, blocks), out / "spectra.png"),
    }
    md = markdown_report(result.report)
    paths["markdown"] = atomic_write(out / "report.md", lambda tmp: tmp.write_text(md))
    paths["json"] = write_json(out / "report.json", result.report)  # last: the complete record
    return paths


__all__ = [
    "EVALUATION_FILES",
    "SAMPLE_FILES",
    "atomic_write",
    "check_outputs",
    "markdown_report",
    "markdown_table",
    "plot_residuals",
    "plot_samples",
    "plot_spectra",
    "residual_maps",
    "summary_rows",
    "write_evaluation",
    "write_json",
    "write_sample_file",
    "write_sample_files",
]
