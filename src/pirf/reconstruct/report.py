"""What `pirf reconstruct` writes: the reconstructions as a data file, a report and a figure.

``OUT/reconstructions.h5`` is a pirf data file in physical units (sample i <-> case i <-> sample i
of the observed data file) with the observation masks in its ``observed`` dataset and the run in
its ``sampling`` attribute; ``OUT/report.json`` and ``OUT/report.md`` hold the scores;
``OUT/reconstructions.png`` shows, for the first cases, truth, observations, reconstruction and
error on one colour scale per channel.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from matplotlib.figure import Figure

from pirf.evaluation.figures import save_figure
from pirf.evaluation.markdown import markdown_table
from pirf.evaluation.report import check_outputs, write_json
from pirf.evaluation.sample_files import write_sample_file
from pirf.files import write_text
from pirf.locks import output_lock
from pirf.reconstruct.runner import Reconstruction, run_reconstruction

RECONSTRUCTION_FILES = ("reconstructions.h5", "report.json", "report.md", "reconstructions.png")
N_SHOW = 3


def plot_reconstructions(result: Reconstruction, n_show: int = N_SHOW) -> Figure:
    """Rows: (case, channel); columns: truth, observed pixels (with their share), reconstruction,
    |error| (titled with the case's relative L2 error). Truth, observation and reconstruction
    share the truth's colour range; the error maps of a channel share one linear scale, clipped
    at the 99th percentile of that channel's errors shown, so that small errors stay visible."""
    pde, shown = result.pde, min(n_show, len(result.truth))
    rows = shown * len(pde.fields)
    fig = Figure(figsize=(10, 2.3 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, 4, squeeze=False)
    errors = np.abs(result.fields[:shown] - result.truth[:shown])
    for case in range(shown):
        for c, name in enumerate(pde.fields):
            row = case * len(pde.fields) + c
            truth, rec = result.truth[case, c], result.fields[case, c]
            seen = np.where(result.masks[case, c], truth, np.nan)
            low, high = float(truth.min()), float(truth.max())
            top = max(float(np.percentile(errors[:, c], 99)), 1e-30)
            relative = float(np.linalg.norm(rec - truth) / max(np.linalg.norm(truth), 1e-30))
            titles = (
                "truth",
                f"observed ({100 * result.masks[case, c].mean():.3g}% of pixels)",
                "reconstruction",
                f"|error| (rel. L2 {relative:.3g})",
            )
            panels = (truth, seen, rec, errors[case, c])
            for col, image in enumerate(panels):
                ax = axes[row, col]
                limits = {"vmin": 0.0, "vmax": top} if col == 3 else {"vmin": low, "vmax": high}
                im = ax.imshow(image, cmap="magma" if col == 3 else "viridis", **limits)
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, extend="max" if col == 3 else "neither")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"case {case}, {name}: {titles[col]}", fontsize=8)
    report = result.report
    prior = Path(report["model"]["path"])
    prior_name = prior.parent.name if prior.stem == "model" else prior.name  # a zoo entry or run folder
    fig.suptitle(
        f"{pde.name}: {report['method']['name']} reconstruction from {report['observe']}, "
        f"prior {prior_name}, {report['settings']['steps']} Heun steps\n"
        f"cases 0..{shown - 1} of {report['data']}; error maps clipped at their 99th percentile",
        fontsize=9,
    )
    return fig


def markdown_report(report: dict[str, Any]) -> str:
    """The report as a page: settings, errors per channel, residual against the floor, cost."""
    method = report["method"]
    settings = ", ".join(f"{k} = {v:g}" for k, v in method.items() if k != "name")
    lines = [
        f"# Reconstruction: {report['model']['pde']} from {report['observe']}",
        "",
        f"Prior `{report['model']['path']}` ({report['model']['kind']}); data `{report['data']}`; "
        f"{report['settings']['n']} cases, Heun {report['settings']['steps']} steps, seed "
        f"{report['settings']['seed']}; method **{method['name']}** ({settings}); weights "
        + ("tuned on " + report["tuning"]["cases"] if report["tuning"]["cases"] else "given")
        + ".",
        "",
        markdown_table(
            ("field", "observed", "metric", "mean", "median"),
            [
                (name, f"{e['observed_fraction']:.3g}", e["metric"], f"{e['mean']:.4g}", f"{e['median']:.4g}")
                for name, e in report["errors"].items()
            ],
        ),
        "",
    ]
    if report["ratio_to_floor"]:
        ratios = ", ".join(f"{region} {ratio:.3g}x" for region, ratio in report["ratio_to_floor"].items())
        lines += [f"Residual (median MSE) / the training data's: {ratios}.", ""]
    cost = report["cost"]
    lines += [
        f"Cost per case: {cost['network_calls_per_case']} network calls, "
        f"{cost['gradient_calls_per_case']} backward passes; {cost['seconds']:.1f} s in all.",
        "",
    ]
    return "\n".join(lines)


def write_reconstruction(result: Reconstruction, out: Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Write the files of `RECONSTRUCTION_FILES` into ``out``."""
    check_outputs(out, RECONSTRUCTION_FILES, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    pde, report = result.pde, result.report
    resolution = result.fields.shape[-1]
    provenance = {
        "sampler": f"reconstruct ({report['method']['name']})",
        "steps": report["settings"]["steps"],
        "report": "report.json",
    }
    h5 = write_sample_file(
        out / "reconstructions.h5",
        [result.fields],
        len(result.fields),
        resolution,
        pde,
        {},
        lambda: provenance,
        overwrite=overwrite,
        seed=report["settings"]["seed"],
        nonfinite_fix="lower the weights (--zeta-obs, --zeta-pde), or use --method projection",
    )
    with h5py.File(h5, "a") as f:
        f.create_dataset("observed", data=result.masks, compression="gzip")
        f.attrs["observe"] = json.dumps(report["observe"])
    paths = {"reconstructions.h5": h5}
    paths["report.json"] = write_json(out / "report.json", report)
    paths["report.md"] = write_text(out / "report.md", markdown_report(report))
    paths["reconstructions.png"] = save_figure(plot_reconstructions(result), out / "reconstructions.png")
    return paths


def reconstruct(
    spec: str | os.PathLike,
    data: str | os.PathLike,
    observe: str,
    *,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    **options: Any,
) -> Reconstruction:
    """`run_reconstruction` (same options), then with ``out`` its files, refused before any
    sampling when ``out`` already holds them (unless ``overwrite``) or another run is writing
    them (`pirf.locks`)."""
    if out is None:
        return run_reconstruction(spec, data, observe, **options)
    with output_lock(out, "a reconstruction folder"):
        check_outputs(Path(out), RECONSTRUCTION_FILES, overwrite)
        result = run_reconstruction(spec, data, observe, **options)
        write_reconstruction(result, Path(out), overwrite=overwrite)
        return result


def read_observed(path: str | os.PathLike) -> np.ndarray:
    """The observation masks ``[n, C, H, W]`` stored in a reconstructions file."""
    with h5py.File(path, "r") as f:
        return np.asarray(f["observed"], dtype=bool)


__all__ = [
    "RECONSTRUCTION_FILES",
    "markdown_report",
    "plot_reconstructions",
    "read_observed",
    "reconstruct",
    "write_reconstruction",
]
