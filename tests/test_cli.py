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
        (["sample", "darcy", "out=s", "-p", "n=3"], {"out": "s", "n": 3}),
        (["sample", "darcy", "--out", "s", "--n", "8", "n=3"], {"n": 3}),  # the key, applied last, wins
        (
            ["sample", "darcy", "out=s", "guidance.kind=dps", "--zeta", "0.01"],
            {
                "guidance": {
                    "kind": "dps",
                    "zeta": 0.01,
                    "mode": None,
                    "alpha": None,
                    "candidates": None,
                    "fraction": 0.2,
                    "eta": None,
                }
            },
        ),
        (["evaluate", "darcy", "out=e", "steps=[20,80]", "--set", "n=5"], {"steps": [20, 80], "n": 5}),
        (
            ["reconstruct", "darcy", "data=d.h5", "observe=u:0.03", "--out", "r", "-p", "tune=2"],
            {"data": "d.h5", "observe": "u:0.03", "out": "r", "tune": 2},
        ),
    ],
)
def test_every_config_verb_takes_bare_and_option_overrides(argv, expected, capsys):
    """One override syntax: KEY=VALUE as a bare argument or after -p/--set, on every verb with a config."""
    import yaml

    code, out, err = run([*argv, "--show"], capsys)
    assert code in (0, None), err
    shown = yaml.safe_load(out)
    assert {key: shown[key] for key in expected} == expected


def test_show_prints_the_yaml_as_written_on_a_narrow_terminal(capsys, monkeypatch):
    """``--show`` is YAML a user can save and load: the console must not re-wrap its long lines."""
    from pirf.config import dump_yaml
    from pirf.finetune.config import resolve_finetune_config

    monkeypatch.setattr(cli.console, "width", 40)
    code, out, err = run(["finetune", "poisson", "--show"], capsys)
    assert code in (0, None), err
    assert out.strip() == dump_yaml(resolve_finetune_config("poisson", None, None, [])).strip()


@pytest.mark.parametrize(
    ("verb", "module", "name"),
    [
        ("sample", "pirf.evaluation.config", "SampleConfig"),
        ("evaluate", "pirf.evaluation.config", "EvaluateConfig"),
        ("reconstruct", "pirf.reconstruct.config", "ReconstructConfig"),
    ],
)
def test_flag_defaults_are_the_config_defaults(verb, module, name):
    """A verb's flags and its config are one setting each: a flag left out resolves to the
    config's default (the CLI passes every flag's value, so the two defaults must agree)."""
    import importlib

    import typer.main

    from pirf.config.convert import defaults_of
    from pirf.config.resume import flat

    cls = getattr(importlib.import_module(module), name)
    defaults = flat(defaults_of(cls))  # dotted keys; required keys absent
    command = typer.main.get_command(cli.app).commands[verb]
    flags = {p.name: p.default for p in command.params if p.name not in ("overrides", "settings", "show")}
    guide = {"guidance": "kind", "guidance_mode": "mode", "alpha": "alpha", "candidates": "candidates"}
    keys = {flag: f"guidance.{key}" for flag, key in (guide | {"zeta": "zeta", "eta": "eta"}).items()}
    for flag, value in flags.items():
        key = keys.get(flag, flag) if verb == "sample" else flag
        if key not in defaults:  # a required key: its flag is optional so that KEY=VALUE may set it
            assert value is None, (flag, value)
        elif value is None and defaults[key] is not None:  # left out: the config's default applies
            assert flag == "steps" and verb == "evaluate", (flag, defaults[key])
        else:
            assert value == defaults[key], (flag, value, defaults[key])
    assert set(flags) >= {"n", "seed", "batch_size", "device", "overwrite"}
