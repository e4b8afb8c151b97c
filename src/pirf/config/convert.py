"""Dataclass conversion of stage configs: `from_dict` builds a (nested, optionally frozen)
dataclass from plain data, checking every key and value against the annotations (an unknown key
names its dotted path, the valid keys and the closest one; nothing is silently cast), and
`to_dict` turns one back into plain, YAML/JSON-safe data."""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from pirf.config.limits import check_limits
from pirf.errors import ConfigError

T = TypeVar("T")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _wrong_type(key: str, tp: Any, value: Any, fix: str | None = None) -> ConfigError:
    expected = _type_name(tp)
    if fix is None and isinstance(value, str) and tp is not str:
        fix = f"give {key} a value of type {expected} (unquoted)"
    elif fix is None and tp is str and not isinstance(value, (Mapping, list, tuple)):
        fix = f"quote it: {key}='{value}'"
    elif fix is None:
        fix = f"give {key} a value of type {expected}"
    return ConfigError(f"{key}: expected {expected}, got {value!r} ({type(value).__name__})", fix)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _from_mapping(cls: type[T], data: Any, key: str, where: str) -> T:
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        what = f"{key}: expected" if key else f"{where}: expected"
        raise ConfigError(
            f"{what} mapping of {cls.__name__} keys, got {data!r} ({type(data).__name__})",
            "write 'key: value' pairs",
        )
    fields, hints = _fields(cls), typing.get_type_hints(cls)
    for name in data:
        if name not in fields:
            raise _unknown_key(str(name), key, list(fields), where)
    missing = [n for n, f in fields.items() if n not in data and not _has_default(f)]
    if missing:
        full = _join(key, missing[0])
        raise ConfigError(f"missing key {full!r} in {where}", f"set it, e.g. -p {full}=...")
    kwargs = {name: _coerce(hints[name], value, _join(key, name), where) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as err:  # a __post_init__ check
        raise ConfigError(f"{key or where}: {err}", "change the value(s) it names") from None


def _unknown_key(name: str, prefix: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    section = f" under {prefix!r}" if prefix else ""
    return ConfigError(
        f"unknown key {_join(prefix, name)!r} in {where}",
        f"{hint}valid keys{section}: {', '.join(valid)}",
    )


def _coerce(tp: Any, value: Any, key: str, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(tp, args, value, key, where)
    if origin is Literal:
        if any(type(a) is type(value) and a == value for a in args):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"choose {_type_name(tp)}"
        raise _wrong_type(key, tp, value, fix)
    if origin in (tuple, list):
        return _coerce_sequence(tp, origin, args, value, key, where)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _wrong_type(key, tp, value)
        kt, vt = args or (Any, Any)
        return {_coerce(kt, k, key, where): _coerce(vt, v, f"{key}.{k}", where) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _from_mapping(tp, value, key, where)
    return _coerce_scalar(tp, value, key)


def _coerce_union(tp: Any, args: tuple, value: Any, key: str, where: str) -> Any:
    if value is None:
        if type(None) in args:
            return None
        raise _wrong_type(key, tp, value)
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:  # X | None: X's own error is the most precise
        return _coerce(options[0], value, key, where)
    options.sort(key=lambda a: a is not type(value))  # an exact type match first (int | float)
    for option in options:
        try:
            return _coerce(option, value, key, where)
        except ConfigError:
            continue
    raise _wrong_type(key, tp, value)


def _coerce_sequence(tp: Any, origin: type, args: tuple, value: Any, key: str, where: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _wrong_type(key, tp, value, f"write a list: {key}=[...]")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _wrong_type(key, tp, value, f"give exactly {len(args)} items")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_coerce(a, v, f"{key}[{i}]", where) for i, (a, v) in pairs)
    item = args[0] if args else Any
    return origin(_coerce(item, v, f"{key}[{i}]", where) for i, v in enumerate(value))


def _coerce_scalar(tp: Any, value: Any, key: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _wrong_type(key, tp, value, f"write {key}=true or {key}=false (unquoted)")
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise _wrong_type(key, tp, value)
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise _wrong_type(key, tp, value, "give a number within float range") from None
        raise _wrong_type(key, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _wrong_type(key, tp, value)
    if isinstance(tp, type) and issubclass(tp, Path):
        if isinstance(value, (str, os.PathLike)):
            return tp(value)
        raise _wrong_type(key, tp, value, "give a path as a string")
    raise TypeError(f"pirf.config cannot check field {key!r}: unsupported annotation {tp!r}")


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "config") -> T:
    """Build the dataclass ``cls`` from ``data``, checking every key and value against its annotations.

    Supported annotations: ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``Path``,
    ``Literal[...]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``list[X]``, ``dict[K, V]``, ``X | None``
    (and other unions), ``Any`` and nested dataclasses. Missing keys take the field defaults.
    ``where`` names the source in messages (a file name, "PretrainConfig", ...).

    Raises:
        ConfigError: an unknown key (with its dotted path, the valid keys and the closest match),
            a missing required key, a value of the wrong type, or one outside the range its
            class declares (`pirf.config.limits`).
    """
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    built = _from_mapping(cls, data, "", where)
    check_limits(built)  # every setting in its range (`pirf.config.limits`)
    return built


def to_dict(instance: Any) -> Any:
    """A plain, YAML/JSON-safe copy: dataclasses -> dicts, tuples -> lists, paths -> strings.

    ``from_dict(type(cfg), to_dict(cfg)) == cfg`` for every supported annotation.
    """
    if dataclasses.is_dataclass(instance) and not isinstance(instance, type):
        return {f.name: to_dict(getattr(instance, f.name)) for f in dataclasses.fields(instance) if f.init}
    if isinstance(instance, Mapping):
        return {k: to_dict(v) for k, v in instance.items()}
    if isinstance(instance, (list, tuple)):
        return [to_dict(v) for v in instance]
    if isinstance(instance, os.PathLike):
        return os.fspath(instance)
    return instance


def defaults_of(cls: type) -> dict[str, Any]:
    """The defaults of ``cls`` as a dict; required fields are left out, nested sections filled in."""
    hints, out = typing.get_type_hints(cls), {}
    for name, f in _fields(cls).items():
        if f.default is not dataclasses.MISSING:
            out[name] = to_dict(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[name] = to_dict(f.default_factory())
        elif dataclasses.is_dataclass(hints[name]):
            out[name] = defaults_of(hints[name])
    return out


__all__ = ["defaults_of", "from_dict", "to_dict"]
