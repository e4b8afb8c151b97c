"""The record of a model checkpoint, checked against its weights and the registered PDEs.

A model file's JSON names the PDE (with its parameters), the channels, the resolution and the
normalization its weights were trained on, and the data they came from; sampling, evaluation,
fine-tuning and pretraining from ``init`` all read them from there. `check_model_record`
refuses a record whose entries are missing, malformed, or disagree with each other or with the
architecture of the weights, before any of them is used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pirf import pdes
from pirf.errors import DataFileError, PirfError
from pirf.normalization import Normalization

RECORD_KEYS = ("pde", "pde_params", "resolution", "normalization", "model")
"""Entries every model record has (`pirf pretrain` and later stages write them)."""
FIX = "use a model file written by pirf (`pirf pretrain`, `pirf finetune`), or an intact copy of it"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_pde(record: Mapping[str, Any], path: str | os.PathLike = "the model record") -> pdes.PDE:
    """The PDE (with its physical parameters) that ``record`` names; an error naming ``path``
    when the name is not registered or the parameters do not fit it."""
    name, params = record.get("pde"), record.get("pde_params", {})
    if not isinstance(name, str) or not isinstance(params, dict):
        raise DataFileError(
            f"{path}: the record's pde={name!r} / pde_params={params!r} are not a name and a mapping", FIX
        )
    try:
        return pdes.get_recorded(name, params, record.get("plugin"))  # a plug-in PDE: its module loaded
    except PirfError as err:  # an unknown PDE (a plugin not loaded?) or parameter: keep the class
        raise type(err)(f"{path}: {err.problem}", err.fix) from None
    except (TypeError, ValueError) as err:  # a plugin PDE refusing its parameters
        raise DataFileError(
            f"{path}: PDE {name!r} refuses the record's parameters {params} ({err})", FIX
        ) from None


def _check_shape(record: Mapping[str, Any], pde: pdes.PDE, channels: int, resolution: int, path: Any) -> None:
    """The record's fields and resolution against the PDE's fields and the weights' architecture."""
    fields = record.get("fields", list(pde.fields))
    if fields != list(pde.fields):
        raise DataFileError(
            f"{path}: the record names the fields {fields}, but {pde.name} has {list(pde.fields)}", FIX
        )
    if channels != len(pde.fields):
        raise DataFileError(
            f"{path}: the weights make {channels} channel(s), but {pde.name} has {len(pde.fields)} "
            f"({', '.join(pde.fields)}): the record belongs to another model",
            FIX,
        )
    stated = record["resolution"]
    if not _is_int(stated) or stated != resolution:
        raise DataFileError(
            f"{path}: the record says resolution {stated!r}, but the weights are a "
            f"{resolution}x{resolution} model",
            FIX,
        )


def _check_normalization(record: Mapping[str, Any], channels: int, path: Any) -> None:
    try:
        norm = Normalization.from_dict(record["normalization"])
    except PirfError as err:
        raise DataFileError(f"{path}: {err.problem}", FIX) from None
    if len(norm.shift) != channels:
        raise DataFileError(
            f"{path}: the record's normalization has {len(norm.shift)} channel(s), the model {channels}", FIX
        )


def _check_data(record: Mapping[str, Any], path: Any) -> None:
    """The provenance of the training data, where consumers read it: path, seed and floor."""
    data = record.get("data", {})
    if not isinstance(data, dict):
        raise DataFileError(f"{path}: the record's data entry is {data!r}, not a mapping", FIX)
    floor = data.get("floor") or {}
    tables = isinstance(floor, dict) and all(
        isinstance(stats, dict) and all(_is_number(v) for v in stats.values()) for stats in floor.values()
    )
    checks = (
        ("path", data.get("path") is None or isinstance(data.get("path"), str)),
        ("seed", data.get("seed") is None or _is_int(data.get("seed"))),
        ("floor", tables),
    )
    for key, ok in checks:
        if not ok:
            raise DataFileError(f"{path}: the record's data.{key} is malformed ({data.get(key)!r})", FIX)


def check_model_record(
    record: Mapping[str, Any], channels: int, resolution: int, path: str | os.PathLike
) -> pdes.PDE:
    """The PDE of a model record, after checking that the record has every `RECORD_KEYS` entry,
    names a registered PDE with valid parameters, and that its fields, resolution and
    normalization match each other and the weights (``channels``, ``resolution`` of the
    architecture); `DataFileError` naming ``path``, both values and the fix otherwise."""
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        raise DataFileError(
            f"the checkpoint {path} lacks {', '.join(missing)} in its record",
            "use a model exported by `pirf pretrain` (or a later pirf stage)",
        )
    pde = record_pde(record, path)
    _check_shape(record, pde, channels, resolution, path)
    _check_normalization(record, channels, path)
    _check_data(record, path)
    return pde
