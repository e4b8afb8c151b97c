"""The sample file of ``pirf sample``: drawn fields written as they come into a pirf data file
(`write_sample_file`) with the model's floor, the samples' own residual statistics and their
provenance, plus ``samples.png`` (`write_sample_files`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from pirf import files, pdes
from pirf.data import DatasetWriter
from pirf.disk import field_bytes, require_space
from pirf.errors import NonFiniteError, OutputExistsError
from pirf.evaluation.figures import plot_samples, save_figure
from pirf.evaluation.report import check_outputs
from pirf.files import jsonable, remove_stale_temporaries, temporary_path

if TYPE_CHECKING:
    from pirf.sampling.draw import SampleStream

SAMPLE_FILES = ("samples.h5", "samples.png")


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


__all__ = ["SAMPLE_FILES", "sample_file_residual", "write_sample_file", "write_sample_files"]
