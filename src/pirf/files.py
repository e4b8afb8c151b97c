"""Crash-safe files: the one implementation every pirf writer goes through.

- **Atomic writes** (`atomic_write`, `write_text`, `write_json`): the content goes to a temporary
  file beside the target (``.NAME.tmp-PID``), is flushed and fsynced, then renamed over the target
  (`replace`, which fsyncs the folder too). A reader sees the old file or the new one, never half
  of one, whenever the writer is killed.
- **Append-only logs** (`append_jsonl`, `read_jsonl`, `truncate_jsonl`): one JSON record per line,
  each append flushed and fsynced. A process killed mid-append leaves a torn last line (no final
  newline); readers drop it, and a resumed run rewrites the log without it.
- **Stale temporaries** (`remove_stale_temporaries`): the temporary files of a killed writer stay
  behind (a SIGKILL runs no cleanup); they carry the writer's pid, so any later writer of the same
  target deletes those whose process is gone.
- **Fault injection** (`crash_point`): named points where a test can have the process kill itself
  with SIGKILL, set by the environment variable ``PIRF_CRASH_AT="name:n"`` (the n-th hit of that
  point; several comma-separated). Unset, a crash point costs one ``None`` check.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pirf.errors import DataFileError, FileSystemError

CRASH_ENV = "PIRF_CRASH_AT"


# -- fault injection ---------------------------------------------------------------------------------


def _crash_plan(spec: str | None) -> dict[str, int] | None:
    """``"a:2,b:1"`` -> ``{"a": 2, "b": 1}`` (hit number per point); None when unset."""
    if not spec:
        return None
    plan = {}
    for item in spec.split(","):
        name, _, count = item.strip().rpartition(":")
        if not name or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{CRASH_ENV}={spec!r}: each item must be name:n with n >= 1")
        plan[name] = int(count)
    return plan


_PLAN = _crash_plan(os.environ.get(CRASH_ENV))
_HITS: dict[str, int] = {}


def crash_due(name: str, where: str = "") -> bool:
    """Count a hit of crash point ``name`` (and of ``name[where]``); True when ``PIRF_CRASH_AT``
    asks for a crash at this hit. The caller then does what the crash should leave behind (a
    torn line) and calls `crash_now`."""
    if _PLAN is None:
        return False
    due = False
    for key in (name, f"{name}[{where}]") if where else (name,):
        _HITS[key] = _HITS.get(key, 0) + 1
        due = due or _PLAN.get(key) == _HITS[key]
    return due


def crash_now() -> None:
    """Kill this process with SIGKILL: no cleanup, no ``finally``, as an OOM kill or a power cut."""
    os.kill(os.getpid(), signal.SIGKILL)


def crash_point(name: str, where: str = "") -> None:
    """A named point where ``PIRF_CRASH_AT`` can kill the process (see `crash_due`)."""
    if _PLAN is not None and crash_due(name, where):
        crash_now()


# -- file-system errors ------------------------------------------------------------------------------

_WRITE_ELSEWHERE = "or write to another folder (--out / out=...)"
FILE_SYSTEM_PROBLEMS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the disk", f"free some space there, {_WRITE_ELSEWHERE}"),
    errno.EDQUOT: ("disk quota exceeded", f"free some of your files there, {_WRITE_ELSEWHERE}"),
    errno.EROFS: ("read-only file system", f"remount it writable, {_WRITE_ELSEWHERE}"),
    errno.EACCES: ("permission denied", f"check the permissions of the path, {_WRITE_ELSEWHERE}"),
    errno.EPERM: ("operation not permitted", f"check the permissions of the path, {_WRITE_ELSEWHERE}"),
    errno.EFBIG: ("file too large for its file system", _WRITE_ELSEWHERE.removeprefix("or ")),
}
"""The errnos a user can cause and fix (a full disk, a read-only mount, a folder not theirs):
what the problem is, and what to do about it."""

_ERRNO_IN_TEXT = re.compile(r"(?:os error|errno =?)\s*(\d+)")
_PATH_IN_TEXT = re.compile(r'at path "([^"]+)"')


def os_error_number(err: BaseException) -> int | None:
    """The errno of ``err``: its own, or the one a library wrote into its message (safetensors:
    "(os error 28)"; HDF5: "errno = 28")."""
    number = getattr(err, "errno", None)
    if isinstance(number, int):
        return number
    found = _ERRNO_IN_TEXT.search(str(err))
    return int(found.group(1)) if found else None


def file_system_error(err: BaseException, path: str | os.PathLike | None = None) -> FileSystemError | None:
    """``err`` as a `FileSystemError` naming the path and the fix, or None when it is not one of
    `FILE_SYSTEM_PROBLEMS` (a bug, not the user's disk)."""
    number = os_error_number(err)
    if number not in FILE_SYSTEM_PROBLEMS:
        return None
    problem, fix = FILE_SYSTEM_PROBLEMS[number]
    found = _PATH_IN_TEXT.search(str(err))
    where = getattr(err, "filename", None) or path or (found.group(1) if found else None)
    return FileSystemError(f"{problem}: {where}" if where else problem, fix)


def default_permissions(path: str | os.PathLike) -> None:
    """Give ``path`` the permissions a plain ``open`` would (0666 less the umask): safetensors
    creates its files 0600, which would hide a model from the rest of a group."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


# -- temporaries -------------------------------------------------------------------------------------


def temporary_path(path: str | os.PathLike) -> Path:
    """The temporary name of ``path`` for this process: ``.NAME.tmp-PID`` in the same folder
    (same file system, so the rename is atomic; the pid tells a stale one from a live one)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporary files of ``path`` whose writer process is gone (``.NAME.tmp-PID``, and the
    ``NAME.tmp-PID`` that checkpoints of older pirf versions used)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    found = [*path.parent.glob(f".{path.name}.tmp-*"), *path.parent.glob(f"{path.name}.tmp-*")]
    stale = []
    for tmp in found:
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            stale.append(tmp)
    return sorted(stale)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of ``path`` left by writers that were killed; returns them."""
    removed = stale_temporaries(path)
    for tmp in removed:
        tmp.unlink(missing_ok=True)
    return removed


# -- atomic writes -----------------------------------------------------------------------------------


def fsync_file(path: str | os.PathLike) -> None:
    """Flush ``path``'s data to the disk (for a file another library wrote and closed)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a complete temporary file over ``path``: fsync its data first (else a crash after the
    rename could leave an empty file under the final name), then the folder's entry."""
    fsync_file(tmp)
    os.replace(tmp, path)
    _fsync_folder(Path(path).parent)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, then `replace` it onto ``path``.

    The temporaries of killed writers of ``path`` are removed first; this process's own is removed
    if ``write`` fails, so an error leaves ``path`` as it was and nothing beside it."""
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1, allow_nan: bool = True) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; serialization errors happen before any write."""
    text = json.dumps(obj, indent=indent, allow_nan=allow_nan)
    return write_text(path, text + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- JSONL logs --------------------------------------------------------------------------------------


def _drop_torn_tail(f: BinaryIO) -> None:
    """Cut a log open in ``ab+`` mode back to its last newline (a torn line of a killed writer)."""
    end = f.seek(0, os.SEEK_END)
    pos = end
    while pos > 0:
        start = max(0, pos - 4096)
        f.seek(start)
        newline = f.read(pos - start).rfind(b"\n")
        if newline >= 0:
            if start + newline + 1 < end:
                f.truncate(start + newline + 1)
            return
        pos = start
    f.truncate(0)


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append ``record`` as one line to the log ``path``, flushed and fsynced (so a checkpoint
    written after it never finds the line missing). A torn last line left by a killed writer is cut
    off first. Crash point ``append.<stem>`` writes half the line, then kills the process: the torn
    append a kill mid-write leaves."""
    path = Path(path)
    line = (json.dumps(record) + "\n").encode()
    with path.open("ab+") as f:
        _drop_torn_tail(f)
        if _PLAN is not None and crash_due(f"append.{path.stem}"):
            f.write(line[: len(line) // 2])
            f.flush()
            os.fsync(f.fileno())
            crash_now()
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _complete_lines(text: str) -> list[str]:
    """The non-blank lines of a log whose newline was written: an append writes the newline last,
    so the text after the last newline is a torn line."""
    return [line for line in text.split("\n")[:-1] if line.strip()]


def _logged(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) of each complete line of a JSONL log."""
    lines = _complete_lines(path.read_text(encoding="utf-8"))
    out = []
    for number, line in enumerate(lines, 1):
        try:
            out.append((line, json.loads(line)))
        except ValueError as err:
            raise DataFileError(
                f"{path}: line {number} is not valid JSON ({err})", "the log is damaged: restore or remove it"
            ) from None
    return out


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSONL log; a torn last line (a writer killed mid-append) is left out. A
    corrupt complete line is an error: that is damage, not an interrupted append."""
    return [record for _, record in _logged(Path(path))]


def truncate_jsonl(path: str | os.PathLike, key: str, last: int) -> None:
    """Keep the lines of ``path`` whose record has ``record[key] <= last`` (those a resumed run does
    not redo), byte for byte, and drop a torn last line; rewritten atomically. A missing log stays
    missing."""
    path = Path(path)
    if not path.exists():
        return
    kept = [line for line, record in _logged(path) if record[key] <= last]
    write_text(path, "".join(line + "\n" for line in kept))


__all__ = [
    "CRASH_ENV",
    "append_jsonl",
    "atomic_write",
    "crash_due",
    "crash_now",
    "crash_point",
    "fsync_file",
    "pid_alive",
    "read_jsonl",
    "remove_stale_temporaries",
    "replace",
    "sha256_file",
    "stale_temporaries",
    "temporary_path",
    "truncate_jsonl",
    "write_json",
    "write_text",
]


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers and NaN/inf as None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
