"""YAML of stage configs, read with YAML 1.2 numbers and booleans (``1e-4`` is a float, ``yes``
is a string) the same way for files and for override values, and with a cap on aliases (a
"billion laughs" document is refused); a saved config's JSON; writing a config as YAML."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pirf.config.convert import to_dict
from pirf.errors import ConfigError
from pirf.files import write_text

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


__all__ = ["MAX_YAML_ALIASES", "dump_yaml", "parse_value", "read_json_config", "read_yaml", "save_config"]
