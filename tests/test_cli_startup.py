"""The `pirf` command starts fast: help, argument errors, `pirf pdes` and `pirf data info` never
import torch (or diffusers, accelerate, matplotlib); its help reads plainly at 80 columns.

Behavioural, not timed: each case runs in a fresh interpreter and lists the heavy modules it
loaded (benchmarks/startup_time.py measures the seconds).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pirf import cli, data, pdes

HEAVY = ("torch", "diffusers", "accelerate", "matplotlib", "scipy")
VERBS = [
    [],
    ["pdes"],
    ["data"],
    ["data", "generate"],
    ["data", "info"],
    ["data", "check"],
    ["pretrain"],
    ["sample"],
    ["evaluate"],
    ["finetune"],
    ["export"],
    ["demo"],
    ["bench"],
]


def heavy_modules_after(argv: list[str] | None) -> tuple[int | None, list[str], str]:
    """Run ``pirf ARGV`` (or only ``import pirf.cli`` when ``argv`` is None) in a fresh interpreter:
    its exit code, the heavy modules it imported, and what it printed."""
    call = "" if argv is None else f"cli.main({argv!r})"
    code = f"""
import json, sys
from pirf import cli
code = 0
try:
    {call or "pass"}
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, sorted(m for m in {HEAVY!r} if m in sys.modules)]))
"""
    env = {**os.environ, "COLUMNS": "80"}
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    last = result.stdout.strip().splitlines()[-1]
    exit_code, heavy = json.loads(last)
    return exit_code, heavy, result.stdout + result.stderr


def test_importing_the_cli_imports_no_torch():
    _, heavy, _ = heavy_modules_after(None)
    assert heavy == []


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["pdes"], ["sample", "--bad-option"], ["data", "generate", "poisson", "-p", "alph=2"]],
)
def test_fast_paths_import_no_torch(argv):
    code, heavy, out = heavy_modules_after(argv)
    assert heavy == [], out
    assert code == (0 if argv in (["--help"], ["pdes"]) else 2), out


def test_data_info_imports_no_torch(tmp_path):
    path = tmp_path / "p.h5"
    data.generate_dataset(pdes.get("poisson"), 2, path, resolution=16, progress=False)
    code, heavy, out = heavy_modules_after(["data", "info", str(path)])
    assert code == 0 and heavy == [], out
    assert "poisson" in out and "alpha" in out


def test_pdes_import_without_torch_still_work():
    """The PDE modules import torch where they compute: instances, grids and parameters need none."""
    code = """
import sys
from pirf import pdes
for name in pdes.names():
    pde = pdes.get(name)
    pde.grid(pde.default_resolution)
    pde.params()
print("torch" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_field_dataset_still_loads_from_pirf_data():
    from pirf.data.dataset import FieldDataset

    assert data.FieldDataset is FieldDataset
    with pytest.raises(AttributeError):
        _ = data.NoSuchThing


def test_finetune_names_still_load_from_the_package():
    import pirf.finetune as finetune
    from pirf.finetune import PRESETS, FinetuneConfig
    from pirf.finetune import loop as loop_module

    assert finetune.finetune is loop_module.finetune
    assert FinetuneConfig.__module__ == "pirf.finetune.config" and "pirf" in PRESETS
    assert finetune.registry.make_method is finetune.make_method  # a submodule, by attribute


def help_text(argv: list[str]) -> str:
    """``pirf ARGV --help`` as an 80-column terminal shows it."""
    runner = CliRunner(env={"COLUMNS": "80"})
    result = runner.invoke(cli.app, [*argv, "--help"], terminal_width=80, prog_name="pirf")
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("argv", VERBS, ids=lambda argv: " ".join(argv) or "pirf")
def test_help_reads_plainly_at_80_columns(argv):
    text = help_text(argv)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "<list[" not in text and "<bool>" not in text  # metavars say KEY=VALUE..., flags say nothing
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert not re.search(r"\{\w+\}", usage), usage  # FILE, not {file}


def test_command_list_has_one_line_per_command():
    """Each command's summary fits on its row: no docstring line breaks carried into the list."""
    lines = help_text([]).splitlines()
    start = next(i for i, line in enumerate(lines) if "Commands" in line)
    rows = lines[start + 1 : next(i for i in range(start, len(lines)) if lines[i].startswith("╰"))]
    names = [row.split()[1] for row in rows]
    assert names == [
        "pdes",
        "pretrain",
        "sample",
        "evaluate",
        "export",
        "finetune",
        "demo",
        "bench",
        "reconstruct",
        "data",
    ]


def test_usage_names_arguments_plainly():
    assert "pirf data info [OPTIONS] FILE" in help_text(["data", "info"])
    assert "pirf finetune [OPTIONS] [BASE] [KEY=VALUE]..." in help_text(["finetune"])
    assert "pirf pretrain [OPTIONS] [CONFIG]" in help_text(["pretrain"])


def test_method_help_lists_every_preset():
    from pirf.finetune.config import PRESETS

    text = " ".join(help_text(["finetune"]).split())
    for name in PRESETS:
        assert name in text


def _in_a_terminal(argv: list[str]) -> tuple[int, str]:
    """Run ``pirf ARGV`` in a fresh interpreter on a pseudo-terminal; its exit code and output."""
    import pty
    import select

    leader, follower = pty.openpty()
    env = os.environ | {"COLUMNS": "100", "TERM": "xterm-256color"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pirf.cli", *argv],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    output = b""
    while True:
        if select.select([leader], [], [], 1.0)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(), output.decode("utf-8", errors="replace")


@pytest.mark.parametrize("works", [True, False], ids=["samples", "fails"])
def test_a_computing_verb_shows_it_is_starting_and_takes_the_spinner_down(
    works, tiny_poisson_model, tmp_path
):
    """On a terminal, `pirf sample` shows a spinner while torch, diffusers and the model load
    (seconds with nothing else on the screen), and takes it down (the cursor shown again) before
    its first line, and on an error too."""
    model = str(tiny_poisson_model) if works else str(tmp_path / "no-such-model")
    code, output = _in_a_terminal(["sample", model, "--n", "2", "--steps", "2", "--out", str(tmp_path / "s")])
    assert code == (0 if works else 2), output
    assert "pirf sample: loading torch" in output
    first_line = "threads:" if works else "error"
    assert output.index("pirf sample: loading torch") < output.index(first_line), output
    hidden, shown = output.rfind("\x1b[?25l"), output.rfind("\x1b[?25h")
    assert 0 <= hidden < shown, "the spinner left the cursor hidden"
