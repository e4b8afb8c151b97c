"""docs/custom_pde.md runs as written: register a heat equation, generate, check, use the CLI."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import pirf.pdes
from conftest import convergence_order
from pirf import cli, data

DOC = Path(__file__).resolve().parents[1] / "docs" / "custom_pde.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def heat_module(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plugin = tmp_path / "my_heat.py"
    plugin.write_text(_blocks()[0])
    yield plugin
    pirf.pdes.unregister("heat")


def test_doc_example_end_to_end(heat_module):
    namespace: dict = {}
    exec(compile(heat_module.read_text(), str(heat_module), "exec"), namespace)
    exec(compile(_blocks()[1], "usage", "exec"), namespace)
    report = data.check_dataset("heat.h5")
    assert report.ok and data.read_info("heat.h5").pde.params()["kappa"] == 0.1
    heat = pirf.pdes.get("heat")
    # the documented residual is 2nd order: the floor of exact data falls 4x per halving of h
    floors = [
        heat.residual_stats(torch.from_numpy(heat.generate(4, n)).double())["interior"]["mse"]
        .mean()
        .sqrt()
        .item()
        for n in (33, 65, 129)
    ]
    assert convergence_order(floors, [32, 64, 128]) == pytest.approx(2.0, abs=0.2)
    noisy = torch.from_numpy(heat.generate(4, 33)).double()
    floor = heat.residual_stats(noisy)["interior"]["mse"]
    noisy += 0.01 * noisy.std() * torch.randn_like(noisy)
    ratio = heat.residual_stats(noisy)["interior"]["mse"] / floor
    assert ratio.median() > 30 and ratio.min() > 10, ratio


def test_plugin_through_cli(heat_module, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(
            [
                "--plugin",
                str(heat_module),
                "data",
                "generate",
                "heat",
                "--n",
                "8",
                "--resolution",
                "16",
                "--out",
                "h.h5",
            ]
        )
    assert exc.value.code == 0
    np.testing.assert_array_equal(data.read_fields("h.h5"), pirf.pdes.get("heat").generate(8, 16))
    with pytest.raises(SystemExit) as exc:
        cli.main(["--plugin", "no_such_module_xyz", "pdes"])
    assert exc.value.code == 2 and "cannot import plugin" in capsys.readouterr().err


def test_a_plugin_is_recorded_so_later_commands_find_it_without_plugin(heat_module, tmp_path):
    """`--plugin` once, at data generation: the data file and the model record name the module,
    and fresh processes that never heard of it read the file, pretrain on it and sample the model."""
    import json
    import subprocess
    import sys

    def pirf_cli(*argv):
        run = subprocess.run(
            [sys.executable, "-m", "pirf.cli", *argv],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stderr
        return run.stdout

    pirf_cli("--plugin", str(heat_module), "data", "generate", "heat", "--n", "16", "--resolution", "16")
    (file,) = tmp_path.glob("heat_*.h5")
    assert data.read_info(file).summary()["plugin"]["file"] == str(heat_module.resolve())
    assert "heat" in pirf_cli("data", "info", str(file))  # no --plugin: the record names it
    model = {"base_channels": 8, "channel_mult": [1, 2], "mid_attention": False}
    pirf_cli(
        "pretrain",
        f"data.path={file}",
        "out=run",
        "steps=2",
        "batch_size=4",
        "warmup_steps=1",
        f"model={json.dumps(model)}",
    )
    record = json.loads((tmp_path / "run" / "model.json").read_text())
    assert record["plugin"]["module"] == "my_heat"
    pirf_cli("sample", "run", "--n", "2", "--steps", "2", "--out", "s")
    assert (tmp_path / "s" / "samples.h5").exists()
