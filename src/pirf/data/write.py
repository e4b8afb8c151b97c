"""Writing pirf data files: `DatasetWriter` (validated batches, atomic: a temporary file renamed
when complete) and `generate_dataset` (solve ``n`` samples of a PDE chunk by chunk)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import pirf
from pirf import pdes
from pirf.data.check import ResidualAccumulator, describe_outliers, outliers, sample_ranges
from pirf.data.read import FORMAT, FORMAT_VERSION, DatasetInfo, read_info
from pirf.disk import field_bytes, require_space
from pirf.errors import DataFileError, OutputExistsError, PirfError, ShapeError
from pirf.files import crash_point, remove_stale_temporaries, replace, temporary_path
from pirf.locks import output_lock
from pirf.normalization import Normalization
from pirf.pdes.plugins import plugin_of


class DatasetWriter:
    """Write ``n`` samples of ``pde`` at ``resolution`` in batches, atomically.

    >>> with DatasetWriter("data.h5", pde, n=100, resolution=32) as w:
    ...     for batch in batches:          # float arrays [b, C, 32, 32] in physical units
    ...         w.write(batch)

    Each batch is validated (shape, finiteness). Channel moments (for the normalization) and
    residual statistics (the floor) are accumulated on the way. On leaving the block without
    error and with all ``n`` samples written, the file is finalized and renamed into place;
    otherwise the temporary file is removed and nothing appears at ``path``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        pde: pdes.PDE,
        n: int,
        resolution: int,
        *,
        seed: int = -1,
        solver: str | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise OutputExistsError(
                f"{self.path} already exists", "choose another --out, or pass --overwrite"
            )
        if not self.path.parent.exists():
            raise DataFileError(f"the folder {self.path.parent} does not exist", "create it first")
        if n <= 0:
            raise PirfError(f"a data set needs at least one sample, got n={n}", "pass --n 1 or more")
        pde.check_resolution(resolution)
        require_space(self.path, field_bytes(n, len(pde.fields), resolution), f"writing {self.path.name}")
        self.pde, self.n, self.resolution, self.seed = pde, n, resolution, seed
        self.solver = solver if solver is not None else pde.solver
        self.written = 0
        self._sum = np.zeros(len(pde.fields))
        self._sumsq = np.zeros(len(pde.fields))
        self._residuals = ResidualAccumulator(pde)
        self.ranges: list[np.ndarray] = []  # per-sample channel ranges, for the outlier screen
        remove_stale_temporaries(self.path)
        self._tmp = temporary_path(self.path)
        self._file: h5py.File | None = None

    def __enter__(self) -> DatasetWriter:
        c, r = len(self.pde.fields), self.resolution
        self._file = h5py.File(self._tmp, "w")
        self._file.create_dataset("fields", shape=(self.n, c, r, r), dtype="float32", chunks=(1, c, r, r))
        return self

    def write(self, batch: np.ndarray) -> None:
        """Append a batch ``[b, C, R, R]`` of physical fields."""
        assert self._file is not None, "use DatasetWriter as a context manager"
        batch = np.asarray(batch)
        self.pde.check_fields(batch, what="samples to write")
        if batch.shape[-1] != self.resolution:
            raise ShapeError(
                f"batch resolution {batch.shape[-1]} differs from the data set's {self.resolution}"
            )
        if self.written + len(batch) > self.n:
            raise ShapeError(f"writing {self.written + len(batch)} samples into a data set of {self.n}")
        stored = batch.astype(np.float32)
        self._file["fields"][self.written : self.written + len(batch)] = stored
        self.written += len(batch)
        s = stored.astype(np.float64)
        self._sum += s.sum(axis=(0, 2, 3))
        self._sumsq += (s**2).sum(axis=(0, 2, 3))
        self._residuals.add(stored)
        self.ranges.append(sample_ranges(s))
        crash_point("data.chunk-written")

    def _finalize(self) -> None:
        assert self._file is not None
        count = self.n * self.resolution**2
        mean = self._sum / count
        std = np.sqrt(np.maximum(self._sumsq / count - mean**2, 0.0))
        grid = self.pde.grid(self.resolution)
        attrs = self._file.attrs
        attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "pirf_version": pirf.__version__,
                "pde": self.pde.name,
                "params": json.dumps(self.pde.params()),
                "fields": json.dumps(list(self.pde.fields)),
                "resolution": self.resolution,
                "axes": json.dumps(list(grid.axes)),
                "spacing": json.dumps(list(grid.spacing)),
                "boundary": grid.boundary,
                "n": self.n,
                "seed": self.seed,
                "solver": self.solver,
                "normalization": json.dumps(Normalization.from_moments(mean, std).to_dict()),
                "floor": json.dumps(self._residuals.summary()),
                **({"plugin": json.dumps(plugin)} if (plugin := plugin_of(self.pde)) else {}),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        )
        attrs["complete"] = True

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None
        try:
            if exc_type is None:
                if self.written != self.n:
                    raise ShapeError(f"only {self.written} of {self.n} samples were written")
                self._finalize()
                self._file.flush()
                os.fsync(self._file.id.get_vfd_handle())
        except BaseException:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            raise
        self._file.close()
        if exc_type is None:
            crash_point("data.complete")
            replace(self._tmp, self.path)  # the final name never holds half a file
        else:
            self._tmp.unlink(missing_ok=True)


def chunk_size_for(pde: pdes.PDE, resolution: int, target_bytes: int = 16 * 2**20) -> int:
    """Samples per generation chunk: about ``target_bytes`` of float64 fields, at least 1, and a
    multiple of the PDE's ``samples_per_group`` (so a trajectory is solved once)."""
    per_sample = 8 * len(pde.fields) * resolution**2
    group = pde.samples_per_group
    groups = max(1, target_bytes // (per_sample * group))
    return int(groups * group)


@contextlib.contextmanager
def _progress(enabled: bool, description: str, total: int) -> Iterator[Any]:
    if not enabled:
        yield lambda advance: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total, rate="")
        start = time.perf_counter()

        def advance(k: int) -> None:
            bar.advance(task, k)
            done = bar.tasks[task].completed
            bar.update(task, rate=f"{done / max(time.perf_counter() - start, 1e-9):.1f} samples/s")

        yield advance


def generate_dataset(
    pde: pdes.PDE,
    n: int,
    out: str | os.PathLike,
    *,
    resolution: int | None = None,
    seed: int = 0,
    chunk: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    lock: bool = True,
) -> DatasetInfo:
    """Solve ``n`` samples of ``pde`` and write them to ``out`` (HDF5), chunk by chunk.

    Memory stays bounded by one chunk; sample ``i`` depends only on ``(seed, i)``, so the file
    is the same whatever the chunk size. ``out`` is locked for the write (`pirf.locks`): a second
    writer of the same file is refused while this one runs (``lock`` False: the caller holds it).
    """
    with output_lock(out, "a data set being generated", enabled=lock, make_parent=False):
        return _generate(pde, n, out, resolution, seed, chunk, overwrite, progress)


def _generate(
    pde: pdes.PDE,
    n: int,
    out: str | os.PathLike,
    resolution: int | None,
    seed: int,
    chunk: int | None,
    overwrite: bool,
    progress: bool,
) -> DatasetInfo:
    resolution = pde.default_resolution if resolution is None else resolution
    pde.check_resolution(resolution)  # before sizing chunks by it
    chunk = chunk_size_for(pde, resolution) if chunk is None else chunk
    if chunk <= 0:
        raise PirfError(f"chunk must be positive, got {chunk}", "pass --chunk 1 or more, or leave it out")
    with (
        DatasetWriter(out, pde, n, resolution, seed=seed, overwrite=overwrite) as writer,
        _progress(progress, f"{pde.name} {resolution}x{resolution}", n) as advance,
    ):
        for start in range(0, n, chunk):
            batch = pde.generate(min(chunk, n - start), resolution, seed=seed, start=start)
            writer.write(batch)
            advance(len(batch))
        found = outliers(np.concatenate(writer.ranges))
        if found:  # the solver made values no physics explains: keep no file
            raise DataFileError(
                f"{pde.name} solver output: {describe_outliers(found, pde.fields)}",
                "a solver failure or a parameter far outside its range: check the PDE's parameters",
            )
    return read_info(out)


__all__ = ["DatasetWriter", "chunk_size_for", "generate_dataset"]
