"""The `PirfError` family: every error a user can cause says what was wrong and what to do.

The CLI turns any `PirfError` into a one-paragraph message and exit code 2, never a traceback.
"""

from __future__ import annotations


class PirfError(Exception):
    """Base class of every error pirf raises on purpose.

    The message names the problem; `fix` (optional) says what to do about it.
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  fix: {fix}")


class UnknownNameError(PirfError, KeyError):
    """A name (PDE, method, preset, ...) that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class ShapeError(PirfError, ValueError):
    """A tensor or array of the wrong rank, channel count or size."""


class NonFiniteError(PirfError, ValueError):
    """NaN or inf where finite numbers are required."""


class DivergenceError(PirfError, RuntimeError):
    """A training run whose loss or reward has run away (non-finite or far beyond its start) and
    kept doing so: the run stops, and the last good checkpoint is kept."""


class DiskSpaceError(PirfError, OSError):
    """An output disk that cannot hold what a run is about to write."""


class DataFileError(PirfError, OSError):
    """A dataset file that is missing, truncated, foreign or inconsistent."""


class OutputExistsError(PirfError, FileExistsError):
    """An output path that already exists and may not be overwritten."""


class ConfigError(PirfError, ValueError):
    """A bad parameter value or configuration key."""


class FileSystemError(PirfError, OSError):
    """A write or read the file system refused: no space, read-only, no permission
    (`pirf.files.file_system_error` names the path and what to do)."""


class OutputLockedError(PirfError, BlockingIOError):
    """An output that another live pirf process is writing (`pirf.locks.output_lock`)."""
