"""Resolving a stage config: defaults < a named preset < a YAML file < overrides (`load_config`),
and the configs shipped with pirf (`packaged_configs`, `resolve_config`)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pirf.config.convert import defaults_of, from_dict, to_dict
from pirf.config.overrides import apply_overrides, deep_merge
from pirf.config.yaml_io import read_yaml
from pirf.errors import ConfigError

T = TypeVar("T")


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    *,
    base: Mapping[str, Any] | Any | None = None,
) -> T:
    """Resolve a stage config: defaults < ``base`` < YAML file at ``path`` < ``overrides``.

    ``base`` is a mapping or a dataclass instance (a named preset); ``overrides`` are
    ``key.sub=value`` strings with YAML values (``optim.lr=1e-4``, ``optim.betas=[0.9,0.99]``).

    Raises:
        ConfigError: a missing or unreadable file, invalid YAML (with its line), a file that is
            not a mapping, a malformed override, or anything `from_dict` rejects.
    """
    data = defaults_of(cls)
    if base is not None:
        data = deep_merge(data, to_dict(base))
    if path is not None:
        data = deep_merge(data, read_yaml(path))
    data = apply_overrides(data, overrides)
    return from_dict(cls, data, where=cls.__name__)


def packaged_configs(stage: str) -> list[str]:
    """Names of the configs shipped for ``stage`` (``"pretrain"`` -> ``["burgers", "burgers-gpu", ...]``)."""
    folder = resources.files("pirf") / "configs" / stage
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_config(stage: str, spec: str | os.PathLike) -> Path:
    """A config file: ``spec`` itself when it is a file, else the shipped config named ``spec``."""
    path = Path(spec)
    if path.is_file():
        return path
    names = packaged_configs(stage)
    if str(spec) in names:
        return Path(str(resources.files("pirf") / "configs" / stage / f"{spec}.yaml"))
    close = difflib.get_close_matches(str(spec), names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"{str(spec)!r} is neither a config file nor a shipped {stage} config",
        f"{hint}shipped: {', '.join(names) or 'none'}",
    )


__all__ = ["load_config", "packaged_configs", "resolve_config"]
