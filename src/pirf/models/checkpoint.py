"""Checkpoint files: weights in safetensors, everything else in a JSON file beside them.

``NAME.safetensors`` holds tensors only (no pickle, nothing executable); ``NAME.json`` holds the
format tag, the pirf version, the SHA-256 of the weights file, and the caller's config (model
architecture, normalization, the PDE and data provenance, training state). The JSON's checksum
ties it to exactly one weights file, so a truncated copy or a mismatched pair is detected on load.

Saving (`save_checkpoint`) writes and fsyncs both files under temporary names, then renames the
weights, then the JSON. A process killed before the first rename leaves the previous pair intact
(and stale temporaries, removed by the next save); one killed between the renames leaves new
weights beside the old JSON, and the new JSON complete under its temporary name:
`recover_checkpoint`, run before a resume reads the checkpoint, finishes that rename.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import pirf
from pirf.errors import DataFileError, ShapeError
from pirf.files import (
    crash_point,
    default_permissions,
    file_system_error,
    fsync_file,
    pid_alive,
    remove_stale_temporaries,
    replace,
    sha256_file,
    temporary_path,
)

FORMAT = "pirf-checkpoint"
FORMAT_VERSION = 1


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, config) paths of a checkpoint named ``path`` (with or without a suffix)."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


_sha256 = sha256_file  # the checksum the record carries and the loader verifies


def _save_tensors(tensors: Mapping[str, torch.Tensor], tmp: Path, final: Path) -> None:
    """safetensors' write of ``tensors`` to ``tmp``, with plain-file permissions; a full or
    read-only disk is a `FileSystemError` naming ``final`` (safetensors raises its own error type)."""
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    except SafetensorError as err:
        mapped = file_system_error(err, final)
        if mapped is None:
            raise
        raise mapped from err
    default_permissions(tmp)


def save_checkpoint(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> Path:
    """Write ``tensors`` and ``config`` atomically; returns the weights path.

    ``config`` must be JSON-serializable; the keys ``format``, ``format_version``,
    ``pirf_version`` and ``sha256`` are set here.
    """
    weights, meta = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(weights)
    remove_stale_temporaries(meta)
    tmp_weights, tmp_meta = temporary_path(weights), temporary_path(meta)
    where = weights.stem
    try:
        _save_tensors(tensors, tmp_weights, weights)
        crash_point("checkpoint.weights-written", where)
        record = {
            **config,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "pirf_version": pirf.__version__,
            "sha256": sha256_file(tmp_weights),
        }
        tmp_meta.write_text(json.dumps(record, indent=1))
        for tmp in (tmp_weights, tmp_meta):  # both durable before the first rename (see the module doc)
            fsync_file(tmp)
        crash_point("checkpoint.record-written", where)
        replace(tmp_weights, weights)
        crash_point("checkpoint.between-renames", where)
        replace(tmp_meta, meta)
        crash_point("checkpoint.renamed", where)
    finally:
        tmp_weights.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    return weights


def _matches(weights: Path, meta: Path) -> bool:
    """Whether the record ``meta`` exists, parses, and carries the checksum of ``weights``."""
    try:
        record = json.loads(meta.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and record.get("sha256") == sha256_file(weights)


def _pending_record(weights: Path, meta: Path) -> Path | None:
    """The temporary JSON of a killed save whose checksum is that of the weights now in place."""
    for tmp in sorted(meta.parent.glob(f".{meta.name}.tmp-*")):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)) and _matches(weights, tmp):
            return tmp
    return None


def recover_checkpoint(path: str | os.PathLike) -> bool:
    """Finish a save killed between its two renames, remove the temporaries of killed saves, and
    say whether a checkpoint record exists at ``path``. Run it before resuming from ``path``.

    A kill between the renames leaves the new weights under the final name and their record,
    complete, under a temporary name: renaming that record into place completes the save (the
    old weights are gone, so rolling forward is the only way back to a matching pair)."""
    weights, meta = checkpoint_paths(path)
    if weights.exists() and not _matches(weights, meta):
        pending = _pending_record(weights, meta)
        if pending is not None:
            replace(pending, meta)
    remove_stale_temporaries(weights)
    remove_stale_temporaries(meta)
    return meta.exists()


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON record of a checkpoint, validated (format, version), without loading weights."""
    _, meta = checkpoint_paths(path)
    if not meta.exists():
        raise DataFileError(
            f"no checkpoint record {meta}",
            "point to a checkpoint written by pirf (NAME.safetensors + NAME.json)",
        )
    try:
        record = json.loads(meta.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise DataFileError(
            f"{meta} is not valid JSON ({err})", "the file is corrupt: use another checkpoint"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise DataFileError(
            f"{meta} is not a pirf checkpoint record (no format={FORMAT!r})",
            "point to the NAME.json that pirf wrote beside NAME.safetensors",
        )
    _check_versions(meta, record)
    return record


def _major_minor(version: Any) -> tuple[int, int] | None:
    """``"0.1.0"`` -> ``(0, 1)``; None for anything that is not a version string."""
    match = re.match(r"(\d+)\.(\d+)", version, re.ASCII) if isinstance(version, str) else None
    return (int(match[1]), int(match[2])) if match else None


def _check_versions(meta: Path, record: dict[str, Any]) -> None:
    """Refuse a record without a format and pirf version, or of a newer format or a newer pirf
    (major.minor): this pirf may misread what a later one wrote."""
    fmt, written = record.get("format_version"), record.get("pirf_version")
    theirs, ours = _major_minor(written), _major_minor(pirf.__version__)
    if isinstance(fmt, bool) or not isinstance(fmt, int) or theirs is None:
        raise DataFileError(
            f"{meta} names no valid checkpoint format and pirf version "
            f"(format_version={fmt!r}, pirf_version={written!r})",
            "the record is damaged: use an intact copy of the checkpoint",
        )
    if fmt > FORMAT_VERSION or (ours is not None and theirs > ours):
        raise DataFileError(
            f"{meta} was written by pirf {written} (checkpoint format {fmt}), newer than this pirf "
            f"{pirf.__version__} (format {FORMAT_VERSION})",
            f"upgrade pirf to {written} or later (pip install -U pirf)",
        )


def load_checkpoint(
    path: str | os.PathLike, *, expect: Mapping[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, config) of a checkpoint, after checking the weights' SHA-256 against the record.

    ``expect``: config entries that must match (e.g. ``{"pde": "darcy"}``); a mismatch is an
    error naming both values.
    """
    weights, meta = checkpoint_paths(path)
    record = read_checkpoint_config(path)
    if not weights.is_file():
        raise DataFileError(
            f"checkpoint weights {weights} are missing", "copy NAME.safetensors beside NAME.json"
        )
    if _sha256(weights) != record.get("sha256"):
        raise DataFileError(
            f"{weights} does not match its record {meta} (checksum differs): truncated, corrupt or mixed up",
            "use an intact copy of the checkpoint",
        )
    for key, value in (expect or {}).items():
        if record.get(key) != value:
            raise DataFileError(
                f"checkpoint {weights.name} has {key}={record.get(key)!r}, expected {value!r}",
                f"use a checkpoint made for {key}={value!r}",
            )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise DataFileError(
            f"{weights} cannot be read as safetensors ({err})",
            "the weights are damaged although their checksum matches the record: use an intact copy",
        ) from None
    return tensors, record


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def load_into(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """``module.load_state_dict(tensors)`` with an error that lists missing, unexpected,
    mis-shaped and mis-typed keys instead of torch's traceback (which would cast a wrong dtype
    silently)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shared = sorted(set(own) & set(tensors))
    shapes = [k for k in shared if tuple(own[k].shape) != tuple(tensors[k].shape)]
    dtypes = [
        f"{k} ({_dtype_name(tensors[k])}, not {_dtype_name(own[k])})"
        for k in shared
        if tensors[k].dtype != own[k].dtype
    ]
    if missing or unexpected or shapes or dtypes:
        parts = []
        labelled = (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", shapes),
            ("wrong dtype", dtypes),
        )
        for label, keys in labelled:
            if keys:
                parts.append(f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
        raise ShapeError(
            f"{what} does not fit the model ({'; '.join(parts)})",
            "build the model with the architecture recorded in the checkpoint's JSON, and load the "
            "weights pirf wrote for it, unconverted",
        )
    module.load_state_dict(dict(tensors))
