"""Reading pirf data files: the format (`FORMAT`, its version and required attributes), what a
file says about itself (`DatasetInfo`), every attribute validated on read (`read_info`) and the
fields (`read_fields`, `iter_chunks`). Needs no torch."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import pirf
from pirf import pdes
from pirf.errors import DataFileError, PirfError
from pirf.normalization import Normalization

FORMAT = "pirf-dataset"
FORMAT_VERSION = 1
REQUIRED_ATTRS = ("format", "format_version", "pde", "params", "fields", "resolution", "n", "normalization")


@dataclass(frozen=True)
class DatasetInfo:
    """What a data file says about itself (validated against its contents on read)."""

    path: Path
    pde: pdes.PDE
    n: int
    resolution: int
    seed: int
    solver: str
    normalization: Normalization
    floor: dict[str, dict[str, float]]
    pirf_version: str
    created: str

    @property
    def fields(self) -> tuple[str, ...]:
        return self.pde.fields

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description (what ``pirf data info`` prints)."""
        grid = self.pde.grid(self.resolution)
        return {
            "path": str(self.path),
            "pde": self.pde.name,
            "params": self.pde.params(),
            "fields": list(self.fields),
            "n": self.n,
            "resolution": self.resolution,
            "axes": list(grid.axes),
            "spacing": list(grid.spacing),
            "boundary": grid.boundary,
            "seed": self.seed,
            "solver": self.solver,
            **({"plugin": plugin} if (plugin := pdes.plugin_of(self.pde)) else {}),
            "normalization": self.normalization.to_dict(),
            "floor": self.floor,
            "pirf_version": self.pirf_version,
            "created": self.created,
        }


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise DataFileError(
            f"no such data file: {path}", "check the path, or create it with `pirf data generate`"
        )
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataFileError(
            f"{path} is not a readable HDF5 file (truncated or not HDF5): {err}",
            "regenerate it with `pirf data generate`, or point to the right file",
        ) from None


REGENERATE = "regenerate it with `pirf data generate`, or point to an intact pirf data file"


def _bad_attr(path: Path, key: str, value: Any, expected: str) -> DataFileError:
    value = value.item() if isinstance(value, np.generic) else value  # 1.5, not np.float64(1.5)
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return DataFileError(f"{path}: attribute {key!r} is {shown}, not {expected}", REGENERATE)


def _int_attr(path: Path, attrs: h5py.AttributeManager, key: str, default: int | None = None) -> int:
    value = attrs.get(key, default)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise _bad_attr(path, key, value, "an integer")
    return int(value)


def _str_attr(path: Path, attrs: h5py.AttributeManager, key: str, default: str = "") -> str:
    value = attrs.get(key, default)
    if not isinstance(value, str):
        raise _bad_attr(path, key, value, "a string")
    return value


def _json_attr(path: Path, attrs: h5py.AttributeManager, key: str, kind: type = object) -> Any:
    text = _str_attr(path, attrs, key)
    try:
        value = json.loads(text)
    except ValueError as err:
        raise DataFileError(f"{path}: attribute {key!r} is not valid JSON ({err})", REGENERATE) from None
    if not isinstance(value, kind):
        raise _bad_attr(path, key, value, f"a JSON {kind.__name__}")
    return value


def _floor_attr(path: Path, attrs: h5py.AttributeManager) -> dict[str, dict[str, float]]:
    """The ``floor`` attribute: region -> statistic -> number (``{}`` when absent)."""
    if "floor" not in attrs:
        return {}
    floor = _json_attr(path, attrs, "floor", dict)
    for part, stats in floor.items():
        numbers = isinstance(stats, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in stats.values()
        )
        if not numbers:
            raise _bad_attr(path, f"floor.{part}", stats, "a mapping of statistics to numbers")
    return floor


def _flag_attr(path: Path, attrs: h5py.AttributeManager, key: str) -> bool:
    value = attrs.get(key, False)
    if not isinstance(value, (bool, np.bool_, int, np.integer)):
        raise _bad_attr(path, key, value, "a boolean")
    return bool(value)


def read_info(path: str | os.PathLike) -> DatasetInfo:
    """Read and validate a data file's description; raise `DataFileError` on anything wrong."""
    path = Path(path)
    with _open(path) as f:
        return _validate(path, f)


def _validate(path: Path, f: h5py.File) -> DatasetInfo:
    try:
        return _validate_contents(path, f)
    except PirfError:
        raise
    except (OSError, KeyError, RuntimeError) as err:  # h5py on a damaged file
        raise DataFileError(
            f"{path} is damaged: its description cannot be read ({type(err).__name__}: {err})", REGENERATE
        ) from None


def _file_pde(path: Path, attrs: h5py.AttributeManager) -> pdes.PDE:
    name, params = _str_attr(path, attrs, "pde"), _json_attr(path, attrs, "params", dict)
    plugin = _json_attr(path, attrs, "plugin", dict) if "plugin" in attrs else None
    try:
        return pdes.get_recorded(name, params, plugin)  # a plug-in PDE: its module loaded on the way
    except PirfError as err:  # unknown PDE or parameter: keep the class, name the file
        raise type(err)(f"{path}: {err.problem}", err.fix) from None
    except (TypeError, ValueError) as err:  # a plugin PDE refusing its parameters
        raise DataFileError(f"{path}: PDE {name!r} refuses parameters {params} ({err})", REGENERATE) from None


def _validate_contents(path: Path, f: h5py.File) -> DatasetInfo:
    attrs = f.attrs
    tag = attrs.get("format")
    if not isinstance(tag, str) or tag != FORMAT:
        raise DataFileError(
            f"{path} is an HDF5 file but not a pirf data set (no format={FORMAT!r} attribute)",
            "write your own fields with pirf.data.DatasetWriter, or generate with `pirf data generate`",
        )
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise DataFileError(f"{path} lacks attribute(s) {', '.join(missing)}", "regenerate the file")
    if not _flag_attr(path, attrs, "complete"):
        raise DataFileError(f"{path} was not completely written", "regenerate it")
    version = _int_attr(path, attrs, "format_version")
    if version > FORMAT_VERSION:
        raise DataFileError(
            f"{path} has format version {version}, newer than this pirf ({pirf.__version__}) reads "
            f"(version {FORMAT_VERSION})",
            "upgrade pirf",
        )
    pde = _file_pde(path, attrs)
    fields = tuple(_json_attr(path, attrs, "fields", list))
    if fields != pde.fields:
        raise DataFileError(f"{path}: channels {fields} do not match {pde.name}'s {pde.fields}", REGENERATE)
    n, r = _int_attr(path, attrs, "n"), _int_attr(path, attrs, "resolution")
    if "fields" not in f or not isinstance(f["fields"], h5py.Dataset):
        raise DataFileError(f"{path} has no 'fields' data set", "regenerate the file")
    data = f["fields"]
    expected = (n, len(fields), r, r)
    if data.shape != expected:
        raise DataFileError(f"{path}: 'fields' has shape {data.shape}, attributes say {expected}", REGENERATE)
    if data.dtype.kind != "f":
        raise DataFileError(f"{path}: 'fields' has dtype {data.dtype}, expected floating point", REGENERATE)
    return DatasetInfo(
        path=path,
        pde=pde,
        n=n,
        resolution=r,
        seed=_int_attr(path, attrs, "seed", -1),
        solver=str(attrs.get("solver", "")),  # informational: any value reads
        normalization=_normalization_attr(path, attrs, len(fields)),
        floor=_floor_attr(path, attrs),
        pirf_version=str(attrs.get("pirf_version", "")),
        created=str(attrs.get("created", "")),
    )


def _normalization_attr(path: Path, attrs: h5py.AttributeManager, channels: int) -> Normalization:
    record = _json_attr(path, attrs, "normalization", dict)
    try:
        norm = Normalization.from_dict(record)
    except PirfError as err:
        raise DataFileError(f"{path}: attribute 'normalization': {err.problem}", REGENERATE) from None
    if len(norm.shift) != channels:
        raise DataFileError(
            f"{path}: the normalization has {len(norm.shift)} channels, the fields {channels}", REGENERATE
        )
    return norm


def read_fields(path: str | os.PathLike, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Physical fields ``[stop-start, C, R, R]`` (float32) of a validated data file."""
    path = Path(path)
    with _open(path) as f:
        info = _validate(path, f)
        stop = info.n if stop is None else min(stop, info.n)
        try:
            return np.asarray(f["fields"][start:stop], dtype=np.float32)
        except (OSError, RuntimeError) as err:  # h5py on a damaged chunk
            raise DataFileError(
                f"{path}: samples {start}:{stop} cannot be read ({err})", "regenerate the file"
            ) from None


def iter_chunks(path: str | os.PathLike, chunk: int = 256) -> Iterator[tuple[int, np.ndarray]]:
    """(start, fields) in chunks of ``chunk`` samples: bounded memory for any file size."""
    info = read_info(path)
    for start in range(0, info.n, chunk):
        yield start, read_fields(path, start, start + chunk)


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "REQUIRED_ATTRS",
    "DatasetInfo",
    "iter_chunks",
    "read_fields",
    "read_info",
]
