"""The data a model's samples are scored against: a held-out reference set and the training set.

The held-out reference set, unless given, is solved fresh: ``n_reference`` samples of the
model's PDE, parameters and resolution with seed = training seed + `REFERENCE_SEED_OFFSET`,
cached under ``${PIRF_CACHE:-~/.cache/pirf}/reference/`` (`held_out_reference`). A given file
must hold the model's PDE, parameters and resolution, and only finite samples.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pirf import pdes
from pirf.data import DatasetInfo, find_nonfinite, generate_dataset, read_info
from pirf.data.check import describe_outliers, find_outliers
from pirf.errors import ConfigError, DataFileError, NonFiniteError, PirfError
from pirf.locks import output_lock
from pirf.models.record import record_pde

REFERENCE_SEED_OFFSET = 10_000
"""Held-out reference seed = training-data seed + this (sample i of seed s is SeedSequence([s, i]))."""


def cache_dir() -> Path:
    """``${PIRF_CACHE:-~/.cache/pirf}``."""
    return Path(os.environ.get("PIRF_CACHE") or "~/.cache/pirf").expanduser()


def reference_path(pde: pdes.PDE, resolution: int, seed: int, n: int, root: Path | None = None) -> Path:
    """Cache file of a reference set: ``<root>/reference/<pde>_<sha256(params, res, seed, n)[:16]>.h5``."""
    key = json.dumps(
        {"pde": pde.name, "params": pde.params(), "resolution": resolution, "seed": seed, "n": n},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return (root or cache_dir()) / "reference" / f"{pde.name}_{digest}.h5"


def _matches(info: DatasetInfo, pde: pdes.PDE, resolution: int) -> bool:
    return info.pde == pde and info.resolution == resolution


def _describe(pde: pdes.PDE, resolution: int) -> str:
    return f"{pde.name} {json.dumps(pde.params())} at {resolution}x{resolution}"


def held_out_reference(
    pde: pdes.PDE,
    resolution: int,
    seed: int,
    n: int = 256,
    *,
    root: Path | None = None,
    progress: bool = True,
) -> Path:
    """A cached file of ``n`` freshly solved samples (seed ``seed``), solved once and reused.

    The file is written atomically (`generate_dataset`); a cached file that is unreadable or
    describes other data is solved again. Runs that need the same set at once solve it once: the
    others wait for the first to finish it (`pirf.locks.output_lock`).
    """
    path = reference_path(pde, resolution, seed, n, root)
    if _cached(path, pde, resolution, seed, n):
        return path
    with output_lock(path, "a cached held-out set", wait=True):  # another run may be solving it
        if not _cached(path, pde, resolution, seed, n):  # it did not: solve it here
            generate_dataset(
                pde, n, path, resolution=resolution, seed=seed, overwrite=True, progress=progress, lock=False
            )
    return path


def _cached(path: Path, pde: pdes.PDE, resolution: int, seed: int, n: int) -> bool:
    """Whether ``path`` is a readable cached set of these samples (truncated or foreign: no)."""
    try:
        info = read_info(path)
    except PirfError:
        return False
    return _matches(info, pde, resolution) and info.n == n and info.seed == seed


def check_data_file(path: Path, pde: pdes.PDE, resolution: int, role: str, option: str) -> DatasetInfo:
    """The info of the data file ``path`` (the ``role`` it plays, given with ``option``), after
    checking it holds ``pde`` with its parameters at ``resolution``, only finite samples and no
    outlier values (`find_outliers`: a huge value would swamp every statistic it feeds)."""
    info = read_info(path)
    if not _matches(info, pde, resolution):
        raise DataFileError(
            f"the {role} file {path} holds {_describe(info.pde, info.resolution)}, "
            f"but the model was trained on {_describe(pde, resolution)}",
            f"pass a {option} file of the model's PDE, parameters and resolution"
            + (", or leave --reference out to solve one" if option == "--reference" else ""),
        )
    bad = find_nonfinite(path)
    if bad:
        raise NonFiniteError(
            f"the {role} file {path} has {len(bad)} sample(s) with NaN or inf (first: {bad[:5]})",
            f"pass a {option} file of finite samples (`pirf data check` finds the bad ones)",
        )
    found = find_outliers(path)
    if found:
        raise DataFileError(
            f"the {role} file {path}: {describe_outliers(found, info.pde.fields)}",
            f"pass a {option} file without such values (`pirf data check` lists them)",
        )
    return info


def training_set(
    record: dict[str, Any], pde: pdes.PDE, resolution: int, train: str | os.PathLike | None
) -> tuple[Path | None, str]:
    """(training file or None, note): ``train`` if given (it must match the model, else an
    error), else the record's data path if it still exists and matches, else None with the reason."""
    if train is not None:
        path = Path(train)
        check_data_file(path, pde, resolution, "training", "--train")
        return path, "given with --train"
    recorded = record.get("data", {}).get("path")
    if not recorded:
        return None, "skipped: the model's record names no training file; pass --train FILE"
    path = Path(recorded)
    if not path.exists():
        return None, f"skipped: the training file {path} of the record is not here; pass --train FILE"
    try:
        check_data_file(path, pde, resolution, "training", "--train")
    except PirfError as err:
        return None, f"skipped: {err.problem}"
    return path, "the training file named in the model's record"


def resolve_reference(
    record: dict[str, Any],
    pde: pdes.PDE,
    resolution: int,
    reference: str | os.PathLike | None,
    n_reference: int,
    root: Path | None,
    progress: bool,
) -> tuple[Path, dict[str, Any]]:
    if reference is not None:
        path = Path(reference)
        info = check_data_file(path, pde, resolution, "reference", "--reference")
        return path, {"path": str(path), "n": info.n, "seed": info.seed, "source": "given with --reference"}
    if n_reference < 2:
        raise ConfigError(f"n_reference must be at least 2, got {n_reference}", "use e.g. --n-reference 256")
    seed = int(record.get("data", {}).get("seed", 0)) + REFERENCE_SEED_OFFSET
    path = held_out_reference(pde, resolution, seed, n_reference, root=root, progress=progress)
    source = f"solved fresh with the held-out seed {seed} (training seed + {REFERENCE_SEED_OFFSET}), cached"
    return path, {"path": str(path), "n": n_reference, "seed": seed, "source": source}


def reference_for(
    record: dict[str, Any],
    reference: str | os.PathLike | None = None,
    n_reference: int = 256,
    *,
    cache: Path | None = None,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """(held-out reference file, note) for the model of ``record``: ``reference`` checked against
    the model's PDE, parameters and resolution, or ``n_reference`` samples solved with seed =
    training seed + `REFERENCE_SEED_OFFSET` and cached under ``cache`` (default `cache_dir`)."""
    pde, resolution = record_pde(record), int(record["resolution"])
    return resolve_reference(record, pde, resolution, reference, n_reference, cache, progress)
