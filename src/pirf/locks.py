"""One writer per output: an advisory lock held for a writer's whole life.

Every pirf stage that writes an output -- a run folder (pretrain, finetune, demo, bench), a data
file (``pirf data generate``, the cache of held-out sets), a results folder (sample, evaluate,
reconstruct) -- holds `output_lock` on it first. The lock is ``fcntl.flock`` on a small file
beside the output, ``.<name>.lock`` in the same folder, which records the holder (pid, host,
start time, command line): a second writer is refused at once with a message naming the holder
(`OutputLockedError`, exit 2), or, for a shared cache, waits its turn. The kernel drops the lock
when its process dies, so the file a killed run leaves behind is no obstacle: the next writer
takes the lock and overwrites the record. Under a multi-process launcher (``accelerate launch``,
``torchrun``) only rank 0 writes and only rank 0 locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pirf.errors import OutputLockedError


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of ``target`` (a file or a folder): ``.<name>.lock`` beside it."""
    target = Path(target).absolute()
    return target.parent / f".{target.name}.lock"


def launcher_rank() -> int:
    """This process's global rank under a multi-process launcher (``RANK``), 0 otherwise."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _holder() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv),
    }


def _describe_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text())
        return f"pid {holder['pid']} on {holder['host']}, since {holder['started']}: {holder['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its record is unreadable)"


def _open_locked(path: Path, wait: bool) -> int | None:
    """A descriptor of ``path`` holding its exclusive lock, or None if another process holds it
    (``wait`` False). Retries when the file was replaced between open and lock, so two writers
    never hold locks on two different files of the same name."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a refused run removed the folder it had made: make it again
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the file was replaced after we opened it: lock the new one


@contextlib.contextmanager
def output_lock(
    target: str | os.PathLike,
    what: str,
    *,
    wait: bool = False,
    enabled: bool = True,
    make_parent: bool = True,
) -> Iterator[None]:
    """Hold the lock of ``target`` (``what`` it is, for the message) for the block's life.

    Another live holder: `OutputLockedError` naming it (``wait`` False), or wait for it to finish
    (``wait`` True: a cache several runs may fill). ``enabled`` False (a rank other than 0 of a
    multi-process run) holds nothing. The folder of ``target`` is created if missing, unless
    ``make_parent`` is False: then a missing folder holds nothing (the writer refuses it itself).
    Folders made for the lock alone are removed again when the block leaves them empty (a refused
    command leaves nothing behind).
    """
    path = lock_path(target)
    if not enabled or launcher_rank() != 0 or not (make_parent or path.parent.is_dir()):
        yield
        return
    made = _missing_folders(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = _open_locked(path, wait)
        if fd is None:
            raise OutputLockedError(
                f"{Path(target)} ({what}) is being written by {_describe_holder(path)}",
                "wait for that run to finish, or write to another output (--out / out=...)",
            )
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(_holder()).encode())
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()  # before unlocking: a waiter that opened this file re-opens the new one
            os.close(fd)
    finally:
        _remove_if_empty(made)


def _missing_folders(folder: Path) -> list[Path]:
    """The folders of ``folder``'s path that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first), stopping at the first that holds anything."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


__all__ = ["launcher_rank", "lock_path", "output_lock"]
