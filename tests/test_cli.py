"""The `pirf` command: generation, info, check, and clear errors with exit code 2."""

import subprocess
import sys

import h5py
import pytest

from pirf import cli, data, pdes


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_generate_info_check(tmp_path, capsys):
    out = tmp_path / "h.h5"
    code, stdout, _ = run(
        [
            "data",
            "generate",
            "helmholtz",
            "--n",
            "6",
            "--resolution",
            "16",
            "--seed",
            "2",
            "--out",
            str(out),
            "-p",
            "wavenumber=2",
        ],
        capsys,
    )
    assert code == 0 and "wrote 6 samples" in stdout
    info = data.read_info(out)
    assert info.pde.params()["wavenumber"] == 2.0 and info.seed == 2
    code, stdout, _ = run(["data", "info", str(out), "--json"], capsys)
    assert code == 0 and '"wavenumber": 2.0' in stdout
    code, stdout, _ = run(["data", "check", str(out)], capsys)
    assert code == 0 and "ok" in stdout


def test_check_fails_with_exit_1_on_corrupted_data(tmp_path, capsys):
    out = tmp_path / "p.h5"
    run(["data", "generate", "poisson", "--n", "4", "--resolution", "16", "--out", str(out)], capsys)
    with h5py.File(out, "a") as f:
        f["fields"][:, 1] *= 1.5  # u no longer solves the equation for f
    code, _, err = run(["data", "check", str(out)], capsys)
    assert code == 1 and "check failed" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "generate", "wave", "--n", "2"], "unknown PDE 'wave'"),
        (["data", "generate", "poisson", "-p", "nu=1"], "valid parameters are: alpha, tau"),
        (["data", "generate", "poisson", "-p", "alpha"], "key=value"),
        (["data", "generate", "poisson", "-p", "alpha=fast"], "should be of type float"),
        (["data", "generate", "poisson", "--resolution", "4"], "at least 8"),
        (["data", "info", "missing.h5"], "no such data file"),
        (["data", "generate", "poisson", "-p", "[/x]=1"], "unknown parameter(s) [/x]"),  # not rich markup
        (["data", "generate", "poisson", "--seed", "-1"], "seed must be a non-negative integer"),
        (["data", "generate", "poisson", "--resolution", "0"], "at least 8"),
        (["data", "generate", "poison"], "did you mean 'poisson'?"),
        (["data", "generate", "poisson", "-p", "alph=2"], "did you mean 'alpha' for 'alph'? valid"),
        (["data", "generate", "poisson", "-p", "resolution=32"], "set it with --resolution"),
        (["data", "generate", "kolmogorov", "-p", "Re=100"], "did you mean 're' for 'Re'?"),
    ],
)
def test_bad_input_exit_2_with_message(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(argv, capsys)
    assert code == 2 and message in " ".join(err.split())
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_unknown_demo_benchmark_names_the_benchmarks(tmp_path, capsys):
    code, _, err = run(["demo", "--benchmark", "darcyy", "--out", str(tmp_path / "demo")], capsys)
    err = " ".join(err.split())
    assert code == 2 and "unknown benchmark 'darcyy'" in err and "did you mean 'darcy'?" in err
    assert "benchmarks: burgers, darcy, helmholtz, kolmogorov, poisson" in err
    assert "run folder" not in err and not (tmp_path / "demo").exists()


def test_pretrain_without_data_points_to_data_pde(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["pretrain"], capsys)
    err = " ".join(err.split())
    assert code == 2 and "no data set given" in err and "data.pde" in err and "data.path" in err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused(tmp_path, capsys):
    out = tmp_path / "p.h5"
    out.write_bytes(b"precious")
    code, _, err = run(["data", "generate", "poisson", "--n", "2", "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in err and out.read_bytes() == b"precious"


def test_console_script_lists_pdes():
    result = subprocess.run(
        [sys.executable, "-m", "pirf.cli", "pdes"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "80", "PATH": ""},
    )
    rows = result.stdout.splitlines()
    assert max(len(row) for row in rows) <= 80
    for name in pdes.names():  # whole names in the table at 80 columns, and each equation below it
        assert any(f" {name} " in row for row in rows), name
        assert any(row.startswith(f"{name}: ") for row in rows), name


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["pretrain", "poisson", "steps=7", "-p", "batch_size=4"], {"steps": 7, "batch_size": 4}),
        (["pretrain", "steps=7", "--set", "seed=3"], {"steps": 7, "seed": 3}),  # no CONFIG, only overrides
        (["finetune", "darcy", "iterations=3", "-p", "lr=1e-05"], {"iterations": 3, "lr": 1e-05}),
        (["demo", "iterations=4", "-p", "seed=2"], {"iterations": 4, "seed": 2}),
        (["bench", "n=16", "-p", "seed=5"], {"n": 16, "seed": 5}),
    ],
)
def test_every_config_verb_takes_bare_and_option_overrides(argv, expected, capsys):
    """One override syntax: KEY=VALUE as a bare argument or after -p/--set, on every verb with a config."""
    import yaml

    code, out, err = run([*argv, "--show"], capsys)
    assert code in (0, None), err
    shown = yaml.safe_load(out)
    assert {key: shown[key] for key in expected} == expected
