"""Name -> PDE class registry; users add their own PDE with `register`."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, TypeVar

from pirf.errors import ConfigError, UnknownNameError
from pirf.pdes.base import PDE

P = TypeVar("P", bound=type[PDE])

_REGISTRY: dict[str, type[PDE]] = {}


def register(cls: P, *, replace: bool = False) -> P:
    """Register a `PDE` subclass under ``cls.name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, PDE)):
        raise ConfigError(f"register() takes a PDE subclass, got {cls!r}", "subclass pirf.pdes.PDE")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{cls.__name__} has no `name` class attribute", 'set name = "my_pde"')
    if name in _REGISTRY and _REGISTRY[name] is not cls and not replace:
        raise ConfigError(
            f"a PDE named {name!r} is already registered ({_REGISTRY[name].__qualname__})",
            "pick another name, or pass replace=True",
        )
    _REGISTRY[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a registered PDE (mainly for tests and notebooks)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """Names of all registered PDEs, sorted."""
    return sorted(_REGISTRY)


def get_class(name: str) -> type[PDE]:
    """The PDE class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), names(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownNameError(
            f"unknown PDE {name!r}", f"{hint}use one of: {', '.join(names())} (or register your own)"
        ) from None


def get(name: str, **params: Any) -> PDE:
    """An instance of the PDE ``name`` with the given physical parameters (others default)."""
    cls = get_class(name)
    unknown = sorted(set(params) - set(cls.param_names()))
    if unknown:
        raise ConfigError(f"{name}: unknown parameter(s) {', '.join(unknown)}", _param_fix(cls, unknown))
    return cls(**{key: _coerce(cls, key, value) for key, value in params.items()})


GRID_KEYS = ("resolution", "res", "r", "nx", "ny", "grid", "size", "grid_size")
"""Parameter names that mean the grid, which is no physical parameter of a PDE."""


def _param_fix(cls: type[PDE], unknown: list[str]) -> str:
    """What to do about ``unknown`` parameters of ``cls``: the near misses (any case), a pointer
    to where the grid resolution goes if one of them names it, and the valid parameters."""
    valid = cls.param_names()
    lower = {v.lower(): v for v in valid}
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key.lower(), list(lower), n=1)
        if close:
            hints.append(f"did you mean {lower[close[0]]!r} for {key!r}?")
    if any(k.lower() in GRID_KEYS or difflib.get_close_matches(k.lower(), ["resolution"]) for k in unknown):
        hints.append(
            "the grid is not a PDE parameter: set it with --resolution (`pirf data generate`) "
            "or data.resolution (a pretrain config);"
        )
    return " ".join([*hints, f"valid parameters are: {', '.join(valid) or '(none)'}"])


def _coerce(cls: type[PDE], key: str, value: Any) -> Any:
    """Check a parameter against its annotated type (int -> float is allowed)."""
    hints = typing.get_type_hints(cls)
    expected = hints.get(key)
    ok = {
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        str: isinstance(value, str),
        bool: isinstance(value, bool),
    }.get(expected, True)
    if not ok:
        default = {f.name: f.default for f in dataclasses.fields(cls)}.get(key)
        raise ConfigError(
            f"{cls.name}: parameter {key}={value!r} should be of type {expected.__name__}",
            f"give a {expected.__name__}, e.g. {key}={default!r}",
        )
    return float(value) if expected is float else value
