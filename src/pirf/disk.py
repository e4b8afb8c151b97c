"""Free-space checks before a run writes: a run that cannot save its checkpoint refuses to start.

Sizes are estimated from what will be written (tensor bytes; float32 fields), not guessed: a
checkpoint of a training run holds the model, its EMA copy and Adam's two moments of every
trained parameter (`checkpoint_bytes`); a data or sample file holds N x C x R x R float32 values
(`field_bytes`). A checkpoint is written beside the previous one and renamed over it
(`pirf.models.checkpoint`), so a run needs room for two at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pirf.errors import DiskSpaceError, FileSystemError

if TYPE_CHECKING:
    import torch

HEADROOM_BYTES = 1 << 20  # JSON records, logs and file-format overhead


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def checkpoint_bytes(model: torch.nn.Module, trained: Iterable[torch.nn.Parameter] | None = None) -> int:
    """Bytes of a training checkpoint: model + EMA copy (2 x the state dict) + Adam's exp_avg and
    exp_avg_sq of the ``trained`` parameters (all of them by default)."""
    state = tensor_bytes(model.state_dict().values())
    trained = list(model.parameters() if trained is None else trained)
    return 2 * state + 2 * tensor_bytes(p for p in trained if p.requires_grad)


def replaced_bytes(run_folder: str | os.PathLike) -> int:
    """Bytes of the weights already in ``run_folder`` (its checkpoints and exported models): a
    resumed run writes over them, so they count toward the space it needs, not against it."""
    folder = Path(run_folder)
    if not folder.is_dir():
        return 0
    return sum(f.stat().st_size for f in folder.rglob("*.safetensors") if f.is_file())


def run_space_needed(run_folder: str | os.PathLike, written: int) -> int:
    """Free bytes a run needs to write ``written`` bytes of weights in ``run_folder`` at its
    peak, counting the weights already there (a resumed run replaces them) as room."""
    return max(0, written - replaced_bytes(run_folder))


def field_bytes(n: int, channels: int, resolution: int) -> int:
    """Bytes of ``n`` float32 fields of ``channels`` x ``resolution`` x ``resolution``."""
    return n * channels * resolution * resolution * 4


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def scratch_array(shape: tuple[int, ...], what: str) -> np.ndarray:
    """A zeroed float32 array of ``shape`` backed by a temporary file (``$TMPDIR``) that is
    unlinked at once: the kernel pages it to disk, so memory stays bounded whatever its size, and
    the disk space is returned when the array is freed (or the process dies)."""
    folder = Path(tempfile.gettempdir())
    require_space(folder, int(np.prod(shape)) * 4, what)
    handle, name = tempfile.mkstemp(dir=folder, prefix="pirf-scratch-")
    try:
        return np.memmap(name, dtype=np.float32, mode="w+", shape=shape)
    finally:
        os.close(handle)
        os.unlink(name)


def require_space(target: str | os.PathLike, need: int, what: str) -> None:
    """Raise `DiskSpaceError` unless the disk of ``target`` (a folder or file, existing or not)
    has ``need`` + 1 MiB free."""
    where = _existing_ancestor(Path(target))
    if os.statvfs(where).f_flag & os.ST_RDONLY:  # a read-only mount is not a space problem
        raise FileSystemError(
            f"read-only file system: {where} ({what} cannot write there)",
            "remount it writable, or write the run elsewhere (--out / out=...)",
        )
    free = shutil.disk_usage(where).free
    if free < need + HEADROOM_BYTES:
        raise DiskSpaceError(
            f"{what} needs about {_mb(need + HEADROOM_BYTES)} on the disk of {where}, "
            f"which has {_mb(free)} free",
            "free some space there, or write the run elsewhere (--out / out=...)",
        )
