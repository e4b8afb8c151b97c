"""Every setting checked when its config loads, not deep inside torch.

A config dataclass declares the range of its numeric settings in a class attribute
``LIMITS = {"lr": POSITIVE, "steps": COUNT, ...}``; `check_limits` walks a config tree (nested
dataclasses, tuples of numbers) and refuses the first value outside its range with the dotted key,
the value and the range (`ConfigError`, exit 2), before any folder is made or any tensor
allocated. `from_dict` runs it on every config it builds; `pirf pretrain`, `pirf finetune` and
`pirf bench` run it again on the config they are given from Python.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from pirf.errors import ConfigError


@dataclass(frozen=True)
class Limit:
    """A range: ``low`` / ``high`` bounds (None: none), open or closed, integers only or not."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def admits(self, value: Any) -> bool:
        """Whether ``value`` (a number) lies in the range and is finite."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        """The range in words: ``an integer >= 1``, ``a finite number > 0``, ``a number in [0, 1)``."""
        kind = "an integer" if self.integer else "a finite number"
        positive = ((1, False, True), (0, True, False))  # COUNT, POSITIVE
        if self.high is None and (self.low, self.low_open, self.integer) in positive:
            return "a positive integer" if self.integer else "a positive finite number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{kind} in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {self.high:g}"
        return kind


POSITIVE = Limit(low=0, low_open=True)
NON_NEGATIVE = Limit(low=0)
FRACTION = Limit(low=0, high=1)
OPEN_FRACTION = Limit(low=0, high=1, high_open=True)  # [0, 1): dropout, Adam betas
COUNT = Limit(low=1, integer=True)
NON_NEGATIVE_COUNT = Limit(low=0, integer=True)
FINITE = Limit()


def check_limits(cfg: Any, prefix: str = "") -> None:
    """Refuse the first setting of the config tree ``cfg`` outside its declared `Limit`."""
    limits: dict[str, Limit] = getattr(type(cfg), "LIMITS", {})
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_limits(value, f"{key}.")
            continue
        limit = limits.get(f.name)
        if limit is None or value is None:
            continue
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if not limit.admits(item):
                raise ConfigError(
                    f"{key} = {value!r} is out of range", f"use {limit.describe()} (e.g. -p {key}=...)"
                )


__all__ = [
    "COUNT",
    "FINITE",
    "FRACTION",
    "NON_NEGATIVE",
    "NON_NEGATIVE_COUNT",
    "OPEN_FRACTION",
    "POSITIVE",
    "Limit",
    "check_limits",
]
