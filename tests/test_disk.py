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
