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

Pieces: YAML reading and writing (`pirf.config.yaml_io`), merging and overrides
(`pirf.config.overrides`), checking against the annotations and back (`pirf.config.convert`)
and resolving a stage's config (`pirf.config.resolve`).
"""

from pirf.config.convert import from_dict, to_dict
from pirf.config.overrides import apply_overrides, deep_merge
from pirf.config.resolve import load_config, packaged_configs, resolve_config
from pirf.config.yaml_io import dump_yaml, parse_value, read_json_config, read_yaml, save_config

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
