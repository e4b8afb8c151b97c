"""docs/own_data.md runs as written: a residual-only PDE, arrays written as pirf data files, then
pretrain, finetune and evaluate through the CLI (with tiny settings appended), and sampling from
Python. The documented data are exact, so their residual is the stencil's error."""

import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pirf.pdes
from conftest import convergence_order
from pirf import cli, data
from pirf.errors import PirfError

DOC = Path(__file__).resolve().parents[1] / "docs" / "own_data.md"

TINY = {  # appended to the documented commands: the same path, at a test's size
    "pretrain": ["steps=6", "batch_size=8", "model.base_channels=8", "model.channel_mult=[1,2]"],
    "finetune": ["iterations=2", "batch_size=2", "eval.n=4", "eval.every=2", "regularization.alphas=[]"],
    "evaluate": ["--n", "4"],
}


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_laplace.py").write_text(_blocks("python")[0])
    writer = _blocks("python")[1].replace("2000", "64").replace("256", "16")  # fewer samples
    (tmp_path / "write_data.py").write_text(writer)
    yield tmp_path
    pirf.pdes.unregister("laplace")
    sys.modules.pop("my_laplace", None)


def _run(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code in (0, None), argv


def test_the_documented_path_from_arrays_to_a_fine_tuned_model(workdir):
    exec(compile((workdir / "write_data.py").read_text(), "write_data.py", "exec"), {})
    info = data.read_info("laplace_train.h5")
    assert info.pde.name == "laplace" and info.n == 64 and info.seed == -1
    assert data.check_dataset("laplace_test.h5").ok
    commands = [shlex.split(line) for line in _blocks("bash")[0].splitlines() if line.startswith("pirf ")]
    assert [c[3 if c[1] == "--plugin" else 1] for c in commands] == ["pretrain", "finetune", "evaluate"]
    for command in commands:
        verb = command[3 if command[1] == "--plugin" else 1]
        _run([*command[1:], *TINY[verb]])
    assert (workdir / "runs/laplace-pirf/model.safetensors").exists()
    assert (workdir / "runs/laplace-eval/report.json").exists()
    namespace: dict = {}
    exec(compile(_blocks("python")[2], "use", "exec"), namespace)
    assert namespace["samples"].shape == (16, 1, 32, 32) and np.isfinite(namespace["samples"]).all()


def test_the_documented_residual_is_second_order_and_without_a_reference_pirf_says_what_to_pass(workdir):
    exec(compile((workdir / "write_data.py").read_text(), "write_data.py", "exec"), {})
    simulate = {}
    exec(compile((workdir / "write_data.py").read_text().split("laplace = ")[0], "sim", "exec"), simulate)
    laplace = pirf.pdes.get("laplace")
    errors = [
        laplace.residual_stats(torch.from_numpy(simulate["my_simulation"](4, r + 1, 0)))["interior"]["mse"]
        .mean()
        .sqrt()
        .item()
        for r in (32, 64, 128)
    ]
    assert convergence_order(errors, [32, 64, 128]) == pytest.approx(2.0, abs=0.2)
    with pytest.raises(PirfError, match=r"eval\.reference"):
        laplace.generate(2, 32)
