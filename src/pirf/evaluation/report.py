"""Writers of ``pirf evaluate``: its JSON and Markdown reports and figures (`write_evaluation`),
and the checks and JSON writing ``pirf sample`` shares.

Every file is written under a temporary name in its folder and renamed into place
(`atomic_write`), so an interrupted run leaves no half-written result. The figures are in
`pirf.evaluation.figures`, the Markdown in `pirf.evaluation.markdown`, the sample file of
``pirf sample`` in `pirf.evaluation.sample_files`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pirf import files, pdes
from pirf.errors import OutputExistsError
from pirf.evaluation.figures import plot_residuals, plot_samples, plot_spectra, save_figure
from pirf.evaluation.markdown import markdown_report
from pirf.files import atomic_write, jsonable

EVALUATION_FILES = ("report.json", "report.md", "samples.png", "residuals.png", "spectra.png")


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


def write_evaluation(result: Evaluation, out: Path, *, overwrite: bool = False) -> dict[str, Path]:
    """``report.json``, ``report.md`` and the three figures of an evaluation, in ``out``."""
    check_outputs(out, EVALUATION_FILES, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    blocks = [("data", result.reference), *((f"{s} steps", x) for s, x in result.samples.items())]
    report = result.report
    model = Path(str(report["model"]["path"])).parent.name
    title = f"{result.pde.name}, model {model} ({report['model']['kind']})"
    note = (
        f"columns: samples 0.. of seed {report['settings']['seed']} (the same noise at every step count); "
        f"data: held-out samples 0.. (seed {report['reference'].get('seed')})"
    )
    paths = {
        "samples": save_figure(plot_samples(result.pde, blocks, title=title, note=note), out / "samples.png"),
        "residuals": save_figure(
            plot_residuals(result.pde, blocks, title=f"{title}: |PDE residual|", note=note),
            out / "residuals.png",
        ),
        "spectra": save_figure(plot_spectra(result.pde, blocks), out / "spectra.png"),
    }
    md = markdown_report(result.report)
    paths["markdown"] = atomic_write(out / "report.md", lambda tmp: tmp.write_text(md))
    paths["json"] = write_json(out / "report.json", result.report)  # last: the complete record
    return paths


__all__ = ["EVALUATION_FILES", "Evaluation", "check_outputs", "write_evaluation", "write_json"]
