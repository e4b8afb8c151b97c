"""Merging config layers (`deep_merge`) and ``key.sub=value`` command-line overrides
(`apply_overrides`, values read as YAML by `parse_value`)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from pirf.config.yaml_io import parse_value
from pirf.errors import ConfigError


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


__all__ = ["apply_overrides", "deep_merge"]
