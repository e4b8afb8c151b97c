"""The reference of every config key, generated from the config dataclasses (docs/config.md).

    python -m pirf.config.reference > docs/config.md

For each verb's config (pretrain, finetune, bench, sample, evaluate, reconstruct) one table: the
dotted key (what an override ``KEY=VALUE`` names), its type, its default, the range
`pirf.config.limits` checks it against, and the note written beside the field in the source.
Nested sections (``model``, ``sampler``, ``regularization``, ...) are flattened to dotted keys;
a section's docstring heads its rows.
A test keeps docs/config.md equal to this output, so the page cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import re
from typing import Any

from pirf.config.limits import Limit

CONFIGS = (
    ("pirf pretrain", "pirf.training.config", "PretrainConfig"),
    ("pirf finetune", "pirf.finetune.config", "FinetuneConfig"),
    ("pirf bench", "pirf.bench.config", "BenchConfig"),
    ("pirf sample", "pirf.evaluation.config", "SampleConfig"),
    ("pirf evaluate", "pirf.evaluation.config", "EvaluateConfig"),
    ("pirf reconstruct", "pirf.reconstruct.config", "ReconstructConfig"),
)
_FIELD_NOTE = re.compile(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$")


def field_notes(cls: type) -> dict[str, str]:
    """The comment written after each field of dataclass ``cls`` in its source, by field name."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip() for m in map(_FIELD_NOTE.match, source.splitlines()) if m}


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _shown(value: Any) -> str:
    """A default as YAML would read it back (lists for tuples, null for None)."""
    if value is dataclasses.MISSING:
        return "(required)"
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value) if not isinstance(value, str) else (f'"{value}"' if value == "" else value)


def _first_line(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def rows(cls: type, prefix: str = "") -> list[tuple[str, ...]]:
    """(key, type, default, range, note) for every leaf setting of ``cls``; a nested dataclass
    contributes a heading row (its key and docstring's first paragraph) and its own rows."""
    out: list[tuple[str, ...]] = []
    limits: dict[str, Limit] = getattr(cls, "LIMITS", {})
    notes = field_notes(cls)
    for field in dataclasses.fields(cls):
        key, default = prefix + field.name, _default(field)
        if dataclasses.is_dataclass(default):
            out.append((f"**{key}**", "section", "", "", _first_line(type(default).__doc__)))
            out.extend(rows(type(default), key + "."))
            continue
        limit = limits.get(field.name)
        kind = str(field.type).replace("|", "\\|")
        out.append(
            (
                f"`{key}`",
                f"`{kind}`",
                f"`{_shown(default)}`",
                limit.describe() if limit else "",
                notes.get(field.name, ""),
            )
        )
    return out


def reference() -> str:
    """docs/config.md: one table per verb."""
    parts = [
        "# Config reference",
        "",
        "Every key of every verb's config, generated from the config dataclasses by",
        "`python -m pirf.config.reference > docs/config.md` (a test keeps this page equal to that",
        "output). Set a key in a YAML file or on the command line: `pirf finetune darcy lr=2e-4",
        "sampler.steps=40` (bare `KEY=VALUE`, or `-p KEY=VALUE`); `--show` prints the resolved config.",
        "Ranges are checked when the config loads (`pirf.config.limits`).",
    ]
    for verb, module, name in CONFIGS:
        cls = getattr(importlib.import_module(module), name)
        parts += ["", f"## `{verb}` ({name})", "", _first_line(cls.__doc__), ""]
        parts += ["| key | type | default | range | note |", "|---|---|---|---|---|"]
        parts += ["| " + " | ".join(row) + " |" for row in rows(cls)]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
