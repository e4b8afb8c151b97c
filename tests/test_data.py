"""HDF5 data sets: round trip, determinism, atomic writes, validation of bad files."""

import json

import h5py
import numpy as np
import pytest
import torch

import pirf.pdes as pdes
from pirf import data
from pirf.errors import (
    ConfigError,
    DataFileError,
    NonFiniteError,
    OutputExistsError,
    ShapeError,
    UnknownNameError,
)


@pytest.fixture
def poisson_file(tmp_path):
    path = tmp_path / "poisson.h5"
    data.generate_dataset(pdes.get("poisson"), 12, path, resolution=16, seed=3, chunk=5, progress=False)
    return path


def test_round_trip_and_metadata(poisson_file):
    info = data.read_info(poisson_file)
    assert (info.pde.name, info.n, info.resolution, info.seed) == ("poisson", 12, 16, 3)
    assert info.pde.params() == {"alpha": 2.0, "tau": 3.0}
    x = data.read_fields(poisson_file)
    np.testing.assert_array_equal(x, pdes.get("poisson").generate(12, 16, seed=3))
    mean, std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    np.testing.assert_allclose(info.normalization.shift, mean, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(info.normalization.scale, std, rtol=1e-4)
    assert info.floor["interior"]["median_mse"] > 0
    summary = info.summary()
    assert summary["boundary"] == "dirichlet" and summary["spacing"] == [1 / 15, 1 / 15]
    json.dumps(summary)


def test_file_independent_of_chunk_size(tmp_path, poisson_file):
    other = tmp_path / "other.h5"
    data.generate_dataset(pdes.get("poisson"), 12, other, resolution=16, seed=3, chunk=12, progress=False)
    np.testing.assert_array_equal(data.read_fields(other), data.read_fields(poisson_file))


def test_torch_dataset_normalizes(poisson_file):
    ds = data.FieldDataset(poisson_file)
    batch = torch.stack([ds[i] for i in range(len(ds))])
    assert batch.shape == (12, 2, 16, 16) and batch.dtype == torch.float32
    np.testing.assert_allclose(batch.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(batch.std(dim=(0, 2, 3), unbiased=False).numpy(), 1, rtol=1e-4)
    physical = data.FieldDataset(poisson_file, normalized=False, in_memory=False)
    torch.testing.assert_close(ds.normalization.denormalize(batch[:1]), physical[0][None])


def test_existing_output_is_refused_unless_overwrite(poisson_file):
    before = poisson_file.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        data.generate_dataset(pdes.get("poisson"), 3, poisson_file, resolution=16, progress=False)
    assert poisson_file.read_bytes() == before
    data.generate_dataset(pdes.get("poisson"), 3, poisson_file, resolution=16, overwrite=True, progress=False)
    assert data.read_info(poisson_file).n == 3


def test_interrupted_write_leaves_nothing(tmp_path):
    path = tmp_path / "broken.h5"
    pde = pdes.get("poisson")
    with pytest.raises(RuntimeError, match="boom"), data.DatasetWriter(path, pde, 4, 16) as writer:
        writer.write(pde.generate(2, 16))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ShapeError, match="only 2 of 4"), data.DatasetWriter(path, pde, 4, 16) as writer:
        writer.write(pde.generate(2, 16))
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_bad_batches(tmp_path):
    pde = pdes.get("poisson")
    bad = pde.generate(2, 16)
    bad[1, 0, 2, 2] = np.inf
    with pytest.raises(NonFiniteError), data.DatasetWriter(tmp_path / "x.h5", pde, 2, 16) as writer:
        writer.write(bad)
    with pytest.raises(ShapeError), data.DatasetWriter(tmp_path / "x.h5", pde, 2, 16) as writer:
        writer.write(np.zeros((2, 3, 16, 16)))
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_is_a_clear_error(tmp_path, poisson_file):
    cut = tmp_path / "cut.h5"
    cut.write_bytes(poisson_file.read_bytes()[:2000])
    with pytest.raises(DataFileError, match="truncated or not HDF5"):
        data.read_info(cut)
    with pytest.raises(DataFileError, match="no such data file"):
        data.read_info(tmp_path / "missing.h5")


def test_foreign_and_inconsistent_files(tmp_path, poisson_file):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataFileError, match="not a pirf data set"):
        data.read_info(foreign)

    def edited(name, edit):
        path = tmp_path / name
        path.write_bytes(poisson_file.read_bytes())
        with h5py.File(path, "a") as f:
            edit(f)
        return path

    with pytest.raises(DataFileError, match="lacks attribute"):
        data.read_info(edited("a.h5", lambda f: f.attrs.__delitem__("normalization")))
    with pytest.raises(UnknownNameError, match="unknown PDE 'wave'"):
        data.read_info(edited("b.h5", lambda f: f.attrs.__setitem__("pde", "wave")))
    with pytest.raises(DataFileError, match="not completely written"):
        data.read_info(edited("c.h5", lambda f: f.attrs.__setitem__("complete", False)))
    with pytest.raises(DataFileError, match="shape"):
        data.read_info(edited("d.h5", lambda f: f.attrs.__setitem__("n", 13)))

    def int_fields(f):
        del f["fields"]
        f["fields"] = np.zeros((12, 2, 16, 16), dtype=np.int32)

    with pytest.raises(DataFileError, match="dtype"):
        data.read_info(edited("e.h5", int_fields))


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("n", "twelve", "attribute 'n' is 'twelve', not an integer"),
        ("format_version", np.nan, "attribute 'format_version' is .*, not an integer"),
        ("params", "[2, 3]", "attribute 'params' is .*, not a JSON dict"),
        ("floor", True, "attribute 'floor' is True, not a string"),
        ("floor", '{"all": {"median_mse": "small"}}', "attribute 'floor.all' is"),
        ("normalization", '{"shift": [0], "scale": [1]}', "the normalization has 1 channels, the fields 2"),
        ("seed", 1.5, "attribute 'seed' is 1.5, not an integer"),
    ],
)
def test_garbled_attributes_are_refused_with_a_fix(tmp_path, poisson_file, attribute, value, message):
    path = tmp_path / "garbled.h5"
    path.write_bytes(poisson_file.read_bytes())
    with h5py.File(path, "a") as f:
        f.attrs[attribute] = value
    with pytest.raises(DataFileError, match=message) as err:
        data.read_info(path)
    assert "pirf data generate" in err.value.fix


def test_check_refuses_settings_that_score_nothing(poisson_file):
    for settings in ({"max_samples": 0}, {"tolerance": float("nan")}, {"tolerance": -1.0}):
        with pytest.raises(ConfigError) as err:
            data.check_dataset(poisson_file, **settings)
        assert err.value.fix


def test_nan_samples_are_found_and_refused(tmp_path, poisson_file):
    path = tmp_path / "nan.h5"
    path.write_bytes(poisson_file.read_bytes())
    with h5py.File(path, "a") as f:
        f["fields"][7, 1, 3, 3] = np.nan
    assert data.find_nonfinite(path) == [7]
    with pytest.raises(NonFiniteError, match=r"1 sample\(s\) contain NaN"):
        data.FieldDataset(path)
    report = data.check_dataset(path)
    assert not report.ok and report.nonfinite == [7] and report.checked == 11


def test_check_passes_own_data_and_flags_corrupted(tmp_path, poisson_file):
    assert data.check_dataset(poisson_file).ok
    path = tmp_path / "noisy.h5"
    path.write_bytes(poisson_file.read_bytes())
    with h5py.File(path, "a") as f:
        x = f["fields"][:]
        x[:, 1] += 0.01 * x[:, 1].std() * np.random.default_rng(0).standard_normal(x[:, 1].shape)
        f["fields"][:] = x
    report = data.check_dataset(path)
    assert not report.ok and report.ratios()["interior"] > 10


def test_user_data_without_floor_is_checked_against_fresh_reference(tmp_path):
    pde = pdes.get("helmholtz")
    path = tmp_path / "user.h5"
    with data.DatasetWriter(path, pde, 8, 16, solver="my own solver") as writer:
        writer.write(pde.generate(8, 16, seed=99))
    with h5py.File(path, "a") as f:
        del f.attrs["floor"]
    report = data.check_dataset(path)
    assert report.ok and "reference" in report.floor_source
    assert data.read_info(path).solver == "my own solver"


def _start_generation(out, n=4000):
    import signal
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "pirf.cli",
        "data",
        "generate",
        "burgers",
        "--n",
        str(n),
        "--resolution",
        "32",
        "--chunk",
        "64",
        "--out",
        str(out),
    ]
    # a runner started in the background (nohup ... &) hands its children SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: give the child the default disposition back
    return subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_temporary(folder, proc, timeout=60.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(folder.glob(".*.tmp-*")):
            time.sleep(0.5)  # let it write a few chunks
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("the writer never created its temporary file")


def test_interrupt_leaves_no_file_and_kill_leaves_only_a_stale_temporary(tmp_path):
    import signal

    out = tmp_path / "b.h5"
    proc = _start_generation(out)
    _wait_for_temporary(tmp_path, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, proc.stderr.read()[-3000:]
    assert list(tmp_path.iterdir()) == []

    proc = _start_generation(out)
    _wait_for_temporary(tmp_path, proc)
    proc.kill()
    proc.wait(timeout=60)
    assert not out.exists() and len(list(tmp_path.glob(".b.h5.tmp-*"))) == 1
    data.generate_dataset(pdes.get("burgers"), 2, out, resolution=32, progress=False)  # cleans up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.h5"] and data.read_info(out).n == 2


# -- outlier values (a corrupted sample that a median residual would not notice) ---------------------
@pytest.fixture(scope="module")
def clean_poisson(tmp_path_factory):
    path = tmp_path_factory.mktemp("outliers") / "clean.h5"
    data.generate_dataset(pdes.get("poisson"), 16, path, resolution=16, progress=False)
    return path


def _corrupt(clean, tmp_path, how):
    import shutil

    import h5py

    bad = tmp_path / "bad.h5"
    shutil.copy(clean, bad)
    with h5py.File(bad, "r+") as f:
        fields = f["fields"][...]
        how(fields)
        f["fields"][...] = fields
    return bad


@pytest.mark.parametrize(
    "how",
    [
        lambda x: x.__setitem__((3, 1), x[3, 1] * 1000),  # a sample scaled x1000
        lambda x: x.__setitem__((3, 1, 4, 4), 3e38),  # one huge finite value
    ],
    ids=["scaled", "huge-value"],
)
def test_outlier_samples_fail_the_check_and_are_refused_for_training(clean_poisson, tmp_path, how, capsys):
    from pirf import cli
    from pirf.errors import DataFileError

    bad = _corrupt(clean_poisson, tmp_path, how)
    report = data.check_dataset(bad)
    assert [(i, c) for i, c, _ in report.outliers] == [(3, 1)] and not report.ok
    with pytest.raises(DataFileError, match=r"sample 3 \(u: .*x the median range\)"):
        data.FieldDataset(bad)
    with pytest.raises(SystemExit) as exc:
        cli.main(["data", "check", str(bad)])
    assert exc.value.code == 1 and "sample 3 (u:" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(
    ("name", "resolution"), [("darcy", 32), ("poisson", 16), ("burgers", 16), ("kolmogorov", 16)]
)
def test_solver_data_has_no_outliers(name, resolution, tmp_path):
    """The screen flags corruption, not physics: no solver sample is flagged."""
    pde = pdes.get(name)
    path = tmp_path / f"{name}.h5"
    data.generate_dataset(pde, 24, path, resolution=resolution, progress=False)  # refused if it were flagged
    assert data.check_dataset(path).outliers == ()


@pytest.mark.parametrize("option", ["--reference", "--train"])
def test_an_outlier_in_a_reference_or_training_file_is_refused_by_evaluate(
    clean_poisson, rough_poisson_model, tmp_path, option, capsys
):
    """Found by the fuzzer: one 3e38 in a file given to `pirf evaluate` swamped every statistic."""
    from pirf import cli

    bad = _corrupt(clean_poisson, tmp_path, lambda x: x.__setitem__((3, 1, 4, 4), 3e38))
    args = ["evaluate", str(rough_poisson_model), option, str(bad), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        cli.main([*args, "--n", "2", "--steps", "2", "--n-reference", "4"])
    err = " ".join(capsys.readouterr().err.split())
    assert exc.value.code == 2 and "sample 3 (u:" in err and "the median range" in err
    assert not (tmp_path / "out").exists()
