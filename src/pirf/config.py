"""Typed stage configs: dataclasses loaded from YAML, with ``key.sub=value`` overrides.

A stage config is a (nested, optionally frozen) dataclass with typed fields and defaults. The
resolved config of a run is, in increasing priority::

    dataclass defaults  <  base (a named preset)  <  YAML file  <  command-line overrides

merged key by key (nested mappings merge, everything else replaces), then checked against the
annotations by `from_dict`: an unknown key names its dotted path, the valid keys and the closest
one; a value of the wrong type names the key, the expected type and the value. Nothing is
silently cast: ``"true"`` is not a bool, ``True`` is not an int, ``1.5`` is not an int.

YAML is read with YAML 1.2 numbers and booleans (``1e-4`` is a float, ``yes`` is a string),
the same way for files and for override values.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import numbers
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from pirf.errors import ConfigError
from pirf.files import write_text

__all__ = [
    "apply_overrides",
    "deep_merge",
    "dump_yaml",
    "from_dict",
    "load_config",
    "packaged_configs",
    "parse_value",
    "read_json_config",
    "read_yaml",
    "resolve_config",
    "save_config",
    "to_dict",
]

T = TypeVar("T")

# --- YAML with 1.2 floats and booleans ------------------------------------------------------------

_BOOL, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[0-9][0-9_]*[eE][-+]?[0-9]+
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |\.(?:inf|Inf|INF))
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


MAX_YAML_ALIASES = 64
"""Aliases (``*name``) one YAML document may use. A config needs few; nine nested lines of them
(a "billion laughs" document) stand for 10^9 values, which any walk over the loaded data (merging,
checking keys, printing) would expand. Past this count the document is refused."""


class _Loader(yaml.SafeLoader):
    """Safe loader whose floats and booleans follow YAML 1.2 (PyYAML reads ``1e-4`` as a string)
    and that refuses documents with more than `MAX_YAML_ALIASES` aliases."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > MAX_YAML_ALIASES:
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"more than {MAX_YAML_ALIASES} aliases (*name) in one document",
                    event.start_mark,
                )
        return super().compose_node(parent, index)


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _FLOAT)]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, _BOOL_RE, list("tTfF"))
_Loader.add_implicit_resolver(_FLOAT, _FLOAT_RE, list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    """Safe dumper that also quotes strings a YAML 1.2 reader would take for floats (``"1e-4"``)."""


_Dumper.add_implicit_resolver(_FLOAT, _FLOAT_RE, list("-+0123456789."))


def parse_value(text: str) -> Any:
    """Read one override value as YAML: ``"1e-4"`` -> 1e-4, ``"[0.9, 0.99]"`` -> list, ``"null"`` -> None."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except (yaml.YAMLError, ValueError, OverflowError) as err:  # bad dates raise ValueError
        raise ConfigError(
            f"cannot read {text!r} as a YAML value: {err}", "quote strings: name='a b'"
        ) from None


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (an empty file is ``{}``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist", "check the path") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {str(path)!r}: {err}", "give a YAML text file") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}: invalid YAML{where}: {err.problem or err.context}", "fix the YAML syntax there"
        ) from None
    except (yaml.YAMLError, ValueError, OverflowError) as err:
        raise ConfigError(f"{path}: invalid YAML: {err}", "fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: a config file must be a mapping of keys to values, not a {type(data).__name__}",
            "write 'key: value' lines at the top level",
        )
    return dict(data)


def read_json_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a config saved as JSON (a run folder's ``config.json``)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read config {str(path)!r}: {err}", "check the run folder") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a JSON object", "check the run folder")
    return data


# --- merge and overrides --------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``update`` over ``base``; nested mappings merge, everything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A new dict with each ``a.b.c=value`` override set (value read by `parse_value`).

    Missing sections are created; keys are not checked here (`from_dict` does that, so an
    unknown key is still reported by its dotted name).
    """
    if isinstance(overrides, str):
        raise TypeError("overrides must be a list of 'key=value' strings, not one string")
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or not all(parts):
            raise ConfigError(
                f"override {item!r} is not of the form key.sub=value", "write e.g. -p optim.lr=1e-4"
            )
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                section = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"override {item!r}: {section!r} is a value ({child!r}), not a section",
                    f"set it directly: -p {section}=...",
                )
            node = child
        node[parts[-1]] = parse_value(text)
    return out


# --- checking against the annotations -------------------------------------------------------------


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


# --- public API ------------------------------------------------------------------------------------


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "config") -> T:
    """Build the dataclass ``cls`` from ``data``, checking every key and value against its annotations.

    Supported annotations: ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``Path``,
    ``Literal[...]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``list[X]``, ``dict[K, V]``, ``X | None``
    (and other unions), ``Any`` and nested dataclasses. Missing keys take the field defaults.
    ``where`` names the source in messages (a file name, "PretrainConfig", ...).

    Raises:
        ConfigError: an unknown key (with its dotted path, the valid keys and the closest match),
            a missing required key, or a value of the wrong type.
    """
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    return _from_mapping(cls, data, "", where)


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


def _defaults(cls: type) -> dict[str, Any]:
    """The defaults of ``cls`` as a dict; required fields are left out, nested sections filled in."""
    hints, out = typing.get_type_hints(cls), {}
    for name, f in _fields(cls).items():
        if f.default is not dataclasses.MISSING:
            out[name] = to_dict(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[name] = to_dict(f.default_factory())
        elif dataclasses.is_dataclass(hints[name]):
            out[name] = _defaults(hints[name])
    return out


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
    data = _defaults(cls)
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


def dump_yaml(instance: Any) -> str:
    """The config as YAML text (block style, short lists inline), readable back by `load_config`."""
    try:
        return yaml.dump(to_dict(instance), Dumper=_Dumper, sort_keys=False, default_flow_style=None)
    except yaml.representer.RepresenterError as err:
        raise TypeError(f"config holds a value YAML cannot represent: {err.args[-1]!r}") from None


def save_config(instance: Any, path: str | os.PathLike) -> Path:
    """Write `dump_yaml` of ``instance`` to ``path`` atomically (temporary file, then rename)."""
    text = dump_yaml(instance)  # fails before anything is written
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, text)
