"""`pirf demo` end to end on a tiny model: it fine-tunes, compares on the same seeds, writes the
report and figures, and refuses to overwrite an earlier demo."""

import json

import pytest

from pirf.cli import main
from pirf.demo import run_demo
from pirf.errors import OutputExistsError

FAST = [
    "iterations=12",
    "batch_size=8",
    "sampler.steps=8",
    "lr=1e-4",
    "lr_schedule=constant",
    "eval.every=6",
    "eval.n=8",
    "eval.n_reference=16",
]


def test_demo_fine_tunes_compares_and_writes_its_report(tiny_poisson_model, tmp_path):
    out = tmp_path / "demo"
    report = run_demo(
        "poisson", out, overrides=[f"base={tiny_poisson_model}", *FAST], n=8, steps=8, progress=False
    )
    for name in ("report.md", "report.json", "samples.png", "residuals.png", "finetune/model.safetensors"):
        assert (out / name).exists(), name
    c = report["comparison"]
    assert set(c["residual"]) == {"all", "interior", "boundary"}
    row = c["residual"]["all"]
    assert (
        row["base"] > 0
        and row["finetuned"] > 0
        and row["reduction"] == pytest.approx(row["base"] / row["finetuned"])
    )
    assert row["floor"] < row["base"]  # a rough model sits far above the data floor
    assert {"fidelity_score", "moments", "spectrum", "sliced_wasserstein", "diversity"} <= set(c["fidelity"])
    assert json.loads((out / "report.json").read_text())["benchmark"] == "poisson"
    assert "| all |" in (out / "report.md").read_text()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_demo(
            "poisson", out, overrides=[f"base={tiny_poisson_model}", *FAST], n=8, steps=8, progress=False
        )


def test_demo_cli_reports_an_unknown_benchmark(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--benchmark", "darcyy", "--out", str(tmp_path / "demo")])
    assert exit_info.value.code == 2
    assert "darcy" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_meets_the_darcy_target(tmp_path):
    """The README's main job on the shipped Darcy model and config: at least 10x lower median
    residual than the base at 20 Heun steps, overall and on interior pixels, with the fidelity
    score within 20% of the base model's (issue 4's acceptance; ~6 min on 2 cores)."""
    report = run_demo("darcy", tmp_path / "demo", n=64, progress=False)
    c = report["comparison"]
    assert c["residual"]["all"]["reduction"] >= 10
    assert c["residual"]["interior"]["reduction"] >= 10
    score = c["fidelity"]["fidelity_score"]
    assert score["finetuned"] <= 1.2 * score["base"]


def test_an_interrupted_demo_resumes_to_the_same_report(tiny_poisson_model, tmp_path, monkeypatch):
    """Ctrl-C during the fine-tune, then `--resume`: the fine-tune continues from its last
    checkpoint and the comparison equals an uninterrupted demo's."""
    import pirf.finetune.loop as loop

    args = {"overrides": [f"base={tiny_poisson_model}", *FAST, "checkpoint_every=4"], "n": 8, "steps": 8}
    whole = run_demo("poisson", tmp_path / "whole", progress=False, **args)
    hits = {"n": 0}
    real = loop.crash_point

    def interrupt(name, where=""):
        hits["n"] += name == "finetune.iteration"
        if hits["n"] == 7:  # after the checkpoint at iteration 4
            raise KeyboardInterrupt
        real(name, where)

    monkeypatch.setattr(loop, "crash_point", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_demo("poisson", tmp_path / "cut", progress=False, **args)
    with pytest.raises(OutputExistsError, match="--overwrite"):  # without --resume: refused
        run_demo("poisson", tmp_path / "cut", progress=False, **args)
    resumed = run_demo("poisson", tmp_path / "cut", resume=True, progress=False, **args)
    assert resumed["comparison"]["residual"] == whole["comparison"]["residual"]
    assert resumed["comparison"]["fidelity"] == whole["comparison"]["fidelity"]


def test_ctrl_c_says_how_to_resume(monkeypatch, capsys, tmp_path):
    import pirf.demo

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pirf.demo, "run_demo", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(tmp_path / "d")])
    assert exit_info.value.code == 130
    assert f"pirf demo --benchmark darcy --out {tmp_path / 'd'} --resume" in capsys.readouterr().out
