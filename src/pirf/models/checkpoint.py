"""Checkpoint files: weights in safetensors, everything else in a JSON file beside them.

``NAME.safetensors`` holds tensors only (no pickle, nothing executable); ``NAME.json`` holds the
format tag, the pirf version, the SHA-256 of the weights file, and the caller's config (model
architecture, normalization, the PDE and data provenance, training state). Both are written
under temporary names and renamed, the JSON last: the JSON is the commit record, and its
checksum ties it to exactly one weights file, so a crash between the two renames, a truncated
copy or a mismatched pair is detected on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import pirf
from pirf.errors import DataFileError, ShapeError

FORMAT = "pirf-checkpoint"
FORMAT_VERSION = 1


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, config) paths of a checkpoint named ``path`` (with or without a suffix)."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_replace(tmp: Path, final: Path) -> None:
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def save_checkpoint(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> Path:
    """Write ``tensors`` and ``config`` atomically; returns the weights path.

    ``config`` must be JSON-serializable; the keys ``format``, ``format_version``,
    ``pirf_version`` and ``sha256`` are set here.
    """
    weights, meta = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp-{os.getpid()}"
    tmp_weights, tmp_meta = weights.with_name(weights.name + suffix), meta.with_name(meta.name + suffix)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp_weights))
        record = {
            **config,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "pirf_version": pirf.__version__,
            "sha256": _sha256(tmp_weights),
        }
        tmp_meta.write_text(json.dumps(record, indent=1))
        _atomic_replace(tmp_weights, weights)
        _atomic_replace(tmp_meta, meta)
    finally:
        tmp_weights.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    return weights


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
    except (ValueError, UnicodeDecodeError) as err:
        raise DataFileError(
            f"{meta} is not valid JSON ({err})", "the file is corrupt: use another checkpoint"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise DataFileError(f"{meta} is not a pirf checkpoint record (no format={FORMAT!r})")
    if int(record.get("format_version", 0)) > FORMAT_VERSION:
        raise DataFileError(
            f"{meta} has checkpoint format {record['format_version']}, newer than this pirf reads",
            "upgrade pirf",
        )
    return record


def load_checkpoint(
    path: str | os.PathLike, *, expect: Mapping[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, config) of a checkpoint, after checking the weights' SHA-256 against the record.

    ``expect``: config entries that must match (e.g. ``{"pde": "darcy"}``); a mismatch is an
    error naming both values.
    """
    weights, meta = checkpoint_paths(path)
    record = read_checkpoint_config(path)
    if not weights.exists():
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
        raise DataFileError(f"{weights} cannot be read as safetensors ({err})") from None
    return tensors, record


def load_into(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """``module.load_state_dict(tensors)`` with an error that lists missing, unexpected and
    mis-shaped keys instead of torch's traceback."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = sorted(k for k in set(own) & set(tensors) if tuple(own[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
        raise ShapeError(
            f"{what} does not fit the model ({'; '.join(parts)})",
            "build the model with the architecture recorded in the checkpoint's JSON",
        )
    module.load_state_dict(dict(tensors))
