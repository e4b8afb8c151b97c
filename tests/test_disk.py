"""Disk and memory: a run refuses to start when its disk cannot hold what it will write (sizes
estimated from the tensors), and evaluation keeps its samples in disk-backed scratch storage."""

import shutil
from collections import namedtuple

import numpy as np
import pytest
import torch

from pirf import cli, disk
from pirf.errors import DiskSpaceError
from pirf.evaluation import runner
from pirf.finetune import FinetuneConfig, finetune
from pirf.finetune.config import EvalConfig, SamplerConfig
from pirf.models import loading
from pirf.sampling import draw
from pirf.training import DataConfig, ModelConfig, PretrainConfig, pretrain

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def full_disk(monkeypatch, tmp_path):
    """The disk under ``tmp_path`` reports ``free[0]`` bytes free (default: 1 MiB, less than any
    run needs); other paths (the shared reference cache) report plenty."""
    free = [1 << 20]

    def usage(path):
        room = free[0] if str(path).startswith(str(tmp_path)) else 1 << 40
        return Usage(1 << 41, (1 << 41) - room, room)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    return free


def test_checkpoint_estimate_counts_model_ema_and_adam_moments_of_trained_weights():
    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 2))  # 110 + 22 floats
    state = (110 + 22) * 4
    assert disk.checkpoint_bytes(model) == 2 * state + 2 * state
    assert disk.checkpoint_bytes(model, list(model[1].parameters())) == 2 * state + 2 * 22 * 4
    assert disk.field_bytes(3, 2, 16) == 3 * 2 * 16 * 16 * 4


def test_require_space_names_need_free_and_fix(full_disk, tmp_path):
    with pytest.raises(DiskSpaceError, match=r"pretrain needs about 2\.0 MiB .* 1\.0 MiB free") as err:
        disk.require_space(tmp_path / "not" / "yet" / "there", 1 << 20, "pretrain")
    assert "--out" in err.value.fix
    full_disk[0] = 3 << 20
    disk.require_space(tmp_path / "run", 1 << 20, "pretrain")  # 1 MiB + 1 MiB headroom fits in 3


def test_pretrain_refuses_a_full_disk_and_writes_nothing(rough_poisson_model, full_disk, tmp_path):
    data_file = rough_poisson_model.parent.parent / "poisson.h5"
    cfg = PretrainConfig(
        data=DataConfig(path=str(data_file)),
        out=str(tmp_path / "run"),
        model=ModelConfig(base_channels=8, channel_mult=(1, 2), mid_attention=False),
        steps=2,
    )
    with pytest.raises(DiskSpaceError, match="pretrain needs about"):
        pretrain(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_finetune_refuses_to_start_on_a_full_disk_and_writes_nothing(tiny_poisson_model, full_disk, tmp_path):
    cfg = FinetuneConfig(
        base=str(tiny_poisson_model),
        out=str(tmp_path / "run"),
        iterations=2,
        batch_size=2,
        sampler=SamplerConfig(steps=2),
        eval=EvalConfig(every=2, n=4, n_reference=8),
    )
    with pytest.raises(DiskSpaceError, match=r"finetune \(pirf\) needs about"):
        finetune(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_data_generate_on_a_full_disk_exits_2_and_leaves_no_file(full_disk, tmp_path, capsys):
    out = tmp_path / "big.h5"  # 100000 x 1 x 64 x 64 float32 = 1.6 GB
    with pytest.raises(SystemExit) as exit_:
        cli.main(["data", "generate", "poisson", "--n", "100000", "--resolution", "64", "--out", str(out)])
    code, err = exit_.value.code, " ".join(capsys.readouterr().err.split())
    assert code == 2 and "needs about" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_scratch_array_is_disk_backed_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    x = disk.scratch_array((6, 2, 4, 4), "test")
    assert isinstance(x, np.memmap) and x.dtype == np.float32 and not x.any()
    x[2:4] = 1.5
    assert float(x.sum()) == 2 * 2 * 16 * 1.5
    assert list(tmp_path.iterdir()) == []  # unlinked at once: nothing to clean up, even after a kill


def test_evaluation_samples_live_in_scratch_storage(rough_poisson_model):
    root = rough_poisson_model.parent.parent
    result = runner.run_evaluation(
        root / "run", n=6, steps=[2], n_reference=8, cache=root / "cache", progress=False, batch_size=4
    )
    samples = result.samples[2]
    assert isinstance(samples, np.memmap) and samples.shape == (6, 2, 16, 16)
    model, record, _ = loading.load_model(root / "run")
    in_memory = draw.generate_samples(model, record, 6, 2, batch_size=4, progress=False).fields
    np.testing.assert_array_equal(np.asarray(samples), in_memory)
    assert result.report["runs"][0]["n"] == 6


def test_sample_of_many_fields_is_refused_up_front_on_a_full_disk(rough_poisson_model, full_disk, tmp_path):
    with pytest.raises(DiskSpaceError, match=r"writing samples\.h5 needs about"):
        runner.sample(rough_poisson_model.parent, tmp_path / "s", n=100_000, steps=2, progress=False)
    assert not (tmp_path / "s").exists()


# -- the file system's own refusals: a clear error naming the path, never a traceback --------------
def test_file_system_errors_are_named_with_their_path_and_fix():
    import errno

    from safetensors import SafetensorError

    from pirf.files import file_system_error

    own = file_system_error(OSError(errno.ENOSPC, "No space left on device", "/runs/x/latest.safetensors"))
    assert own.problem == "no space left on the disk: /runs/x/latest.safetensors" and "--out" in own.fix
    rust = SafetensorError(
        'Error while serializing: I/O error: Read-only file system (os error 30) at path "/m/.t"'
    )
    assert file_system_error(rust).problem == "read-only file system: /m/.t"
    hdf5 = OSError("Can't write data (file write failed: ..., errno = 28, error message = 'No space left')")
    assert file_system_error(hdf5, "data/a.h5").problem == "no space left on the disk: data/a.h5"
    assert file_system_error(OSError(errno.EACCES, "Permission denied", "/root/x")).problem.startswith(
        "permission"
    )
    assert file_system_error(ValueError("a bug, not a disk")) is None
    assert file_system_error(OSError(errno.ENOENT, "missing", "f")) is None  # not a disk problem


def test_a_checkpoint_write_that_fills_the_disk_names_it_and_leaves_nothing(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from pirf.errors import FileSystemError
    from pirf.models import checkpoint

    def full(tensors, path):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(FileSystemError, match=r"no space left on the disk: .*latest\.safetensors"):
        checkpoint.save_checkpoint(tmp_path / "latest", {"w": torch.zeros(3)}, {})
    assert list(tmp_path.iterdir()) == []


def test_weights_get_the_permissions_of_plain_files(tmp_path):
    import os

    from pirf.models import checkpoint

    mask = os.umask(0o022)
    try:
        weights = checkpoint.save_checkpoint(tmp_path / "m", {"w": torch.zeros(3)}, {})
    finally:
        os.umask(mask)
    assert weights.stat().st_mode & 0o777 == 0o644  # safetensors alone writes 0600


def test_a_read_only_disk_is_named_as_such_not_as_lack_of_space(tmp_path, monkeypatch):
    import os

    from pirf.errors import FileSystemError

    real = os.statvfs

    class ReadOnly:
        def __init__(self, result):
            self.f_flag = result.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(real(p)))
    with pytest.raises(FileSystemError, match=r"read-only file system: .*\(pretrain cannot write there\)"):
        disk.require_space(tmp_path / "run", 1, "pretrain")


def test_the_cli_turns_a_file_system_error_into_exit_2(monkeypatch, capsys, tmp_path):
    import errno

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "d.h5"))

    monkeypatch.setattr("pirf.data.generate_dataset", refused)
    with pytest.raises(SystemExit) as exc:
        cli.main(["data", "generate", "darcy", "--n", "2", "--out", str(tmp_path / "d.h5")])
    err = " ".join(capsys.readouterr().err.split())
    assert exc.value.code == 2 and f"permission denied: {tmp_path / 'd.h5'}" in err and "Traceback" not in err


def test_a_resumed_run_counts_the_weights_it_replaces_as_room(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "model.safetensors").write_bytes(b"x" * 300)
    assert disk.run_space_needed(tmp_path, 5000) == 3700
    assert disk.run_space_needed(tmp_path / "new", 5000) == 5000
    assert disk.run_space_needed(tmp_path, 1000) == 0
