"""A resumed run keeps the settings it was started with, unless a change is meant.

``--resume`` continues a run from its checkpoint; settings that differ from the run's own
``config.json`` (another learning rate, batch size, data file ...) would leave a model whose
record misstates how it was trained. `check_resumed_config` refuses them with the list of
differences; with ``allow_change`` (``--allow-change``) it accepts them, writes the new settings
to ``config.json`` and appends the change, with the step it took effect at, to
``config_changes.jsonl``, which every later checkpoint record carries as ``config_changes``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pirf.config.convert import from_dict, to_dict
from pirf.config.yaml_io import read_json_config
from pirf.errors import ConfigError
from pirf.files import append_jsonl, read_jsonl, write_json

CHANGES_FILE = "config_changes.jsonl"


def flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (the override syntax's keys)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flat(value, f"{name}.")
        else:
            out[name] = value
    return out


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every key whose value differs between two configs: ``{key: (saved, current)}``."""
    old, new = flat(saved), flat(current)
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}


def check_resumed_config(
    cls: type, run_dir: Path, cfg: Any, *, allow_change: bool, at: int, write: bool = True
) -> None:
    """Refuse resuming the run in ``run_dir`` with settings ``cfg`` (a ``cls`` instance) that differ
    from its ``config.json``, unless ``allow_change``: then record the change (module docstring;
    ``write`` False: another process of the run records it)."""
    path = run_dir / "config.json"
    saved = to_dict(from_dict(cls, read_json_config(path), where=str(path)))  # today's defaults filled in
    current = to_dict(cfg)
    changed = differences(saved, current)
    if not changed:
        return
    listing = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
    if not allow_change:
        raise ConfigError(
            f"--resume with settings that differ from the run's own ({listing})",
            "resume with the run's settings (drop those overrides), or pass --allow-change if the change "
            "is meant: the run then records both",
        )
    if not write:
        return
    append_jsonl(
        run_dir / CHANGES_FILE,
        {
            "at": at,
            "changed": {k: [old, new] for k, (old, new) in changed.items()},
            "command": " ".join(sys.argv),
        },
    )
    write_json(path, current)


def config_changes(run_dir: str | Path) -> list[dict[str, Any]]:
    """The changes recorded by resumes with ``allow_change`` (empty for a run never changed)."""
    path = Path(run_dir) / CHANGES_FILE
    return read_jsonl(path) if path.exists() else []


__all__ = ["CHANGES_FILE", "check_resumed_config", "config_changes", "differences", "flat"]
