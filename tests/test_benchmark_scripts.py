"""The scripts under benchmarks/ still run against the library they measure: every one imports
(so a renamed or removed name fails here, not in a long run), and the cost scripts finish a smoke
run and write their tables."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py"))


def test_there_are_scripts():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_imports(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run: a script may import its siblings
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)  # runs the imports and definitions; main() is behind __name__
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"


def _run(argv: list[str], tmp_path: Path) -> None:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PIRF_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_model_speed_smoke_run(tmp_path: Path) -> None:
    flags = ["--steps", "1", "--n", "1", "--pairs", "1", "--warmup", "0", "--benchmarks", "darcy"]
    _run(
        [str(BENCHMARKS / "model_speed.py"), *flags, "--reference", "darcy", "--out", str(tmp_path)], tmp_path
    )
    rows = json.loads((tmp_path / "model_speed.json").read_text())
    assert rows and (tmp_path / "model_speed.md").exists()


def test_finetune_cost_smoke_run(tmp_path: Path) -> None:
    flags = ["--steps", "4", "--batch", "2", "--pairs", "1", "--warmup", "0", "--memory-rounds", "0"]
    _run([str(BENCHMARKS / "finetune_cost.py"), *flags, "--out", str(tmp_path)], tmp_path)
    text = (tmp_path / "finetune_cost.md").read_text()
    assert "PIRF K=1" in text and "x sampling" in text
