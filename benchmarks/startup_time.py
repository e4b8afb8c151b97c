"""Start-up time of the `pirf` command: the calls a new user makes first, timed as whole processes.

    python benchmarks/startup_time.py              # ~1 min; writes benchmarks/results/startup_time.{json,md}
    python benchmarks/startup_time.py --repeats 3 --out /tmp/st --note "machine busy with a training job"

Each call is started ``--repeats`` times (after one untimed warm-up round that fills the OS file
cache), from process start to exit, with ``time.perf_counter`` around `subprocess.run`; the
calls take turns round by round, so a change in the machine's load falls on all of them alike.
Reported: min, median and max seconds (quote the median; a wide spread says the machine was busy,
and the load average before and after is recorded beside it). ``import torch`` alone is timed as a
yardstick: it is what every call below would pay if the command imported torch on start.

The calls: ``pirf --help``, ``pirf pdes``, ``pirf data info FILE`` (a 4-sample 16x16 Poisson file
made first in a temporary folder, or ``--data FILE``) and an argument error (``pirf sample
--no-such-option``, exit code 2). tests/test_cli_startup.py checks that none of them imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pirf

RESULTS = Path(__file__).resolve().parent / "results"


def pirf_command() -> list[str]:
    """The `pirf` console script of this interpreter's environment (else ``python -m pirf.cli``)."""
    script = Path(sys.executable).parent / "pirf"
    if script.exists():
        return [str(script)]
    found = shutil.which("pirf")
    return [found] if found else [sys.executable, "-m", "pirf.cli"]


def calls(data_file: Path) -> dict[str, tuple[list[str], int]]:
    """Name -> (command line, expected exit code) of every timed call."""
    pirf_cmd = pirf_command()
    return {
        "pirf --help": ([*pirf_cmd, "--help"], 0),
        "pirf pdes": ([*pirf_cmd, "pdes"], 0),
        "pirf data info FILE": ([*pirf_cmd, "data", "info", str(data_file)], 0),
        "pirf sample --no-such-option (argument error)": ([*pirf_cmd, "sample", "--no-such-option"], 2),
        "python -c 'import torch' (yardstick)": ([sys.executable, "-c", "import torch"], 0),
    }


def make_data_file(folder: Path) -> Path:
    """A 4-sample 16x16 Poisson data file in ``folder``, written by `pirf data generate`."""
    path = folder / "poisson_r16_n4.h5"
    command = [*pirf_command(), "data", "generate", "poisson", "--n", "4", "--resolution", "16"]
    subprocess.run([*command, "--out", str(path)], check=True, capture_output=True)
    return path


def run_once(command: list[str], expected: int, env: dict[str, str]) -> float:
    """Seconds from the start of ``command`` to its exit; its output is thrown away."""
    t0 = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    seconds = time.perf_counter() - t0
    if result.returncode != expected:
        raise RuntimeError(
            f"{' '.join(command)} exited {result.returncode} (expected {expected}): {result.stderr.decode()}"
        )
    return seconds


def measure(data_file: Path, repeats: int) -> dict[str, dict[str, Any]]:
    """Min, median and max seconds of every call over ``repeats`` rounds (after a warm-up round)."""
    env = {**os.environ, "COLUMNS": "80"}
    todo = calls(data_file)
    times: dict[str, list[float]] = {name: [] for name in todo}
    for round_ in range(repeats + 1):
        for name, (command, expected) in todo.items():
            seconds = run_once(command, expected, env)
            if round_ > 0:  # round 0 warms the file cache
                times[name].append(seconds)
    return {
        name: {
            "command": " ".join(todo[name][0]).replace(str(data_file), "FILE"),
            "min_s": min(t),
            "median_s": statistics.median(t),
            "max_s": max(t),
            "runs": t,
        }
        for name, t in times.items()
    }


def without_note(argv: list[str]) -> list[str]:
    """The command-line arguments less ``--note TEXT`` (the note is written on its own line)."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--note="):
            skip = False
        elif arg == "--note":
            skip = True
        else:
            out.append(arg)
    return out


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def markdown(meta: dict[str, Any], rows: dict[str, dict[str, Any]]) -> str:
    """The results as a Markdown table under a line naming the machine."""
    lines = [
        f"Measured with `{meta['command']}` on {meta['machine']} (pirf {pirf.__version__}, "
        f"Python {meta['python']}); load average before {meta['load_before']}, after {meta['load_after']}.",
        "",
    ]
    if meta["note"]:
        lines += [f"Note: {meta['note']}", ""]
    lines += [
        f"Whole-process seconds over {meta['repeats']} runs each (after a warm-up round); quote the median.",
        "",
        "| call | min s | median s | max s |",
        "|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(f"| `{name}` | {r['min_s']:.2f} | {r['median_s']:.2f} | {r['max_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Time the calls and write ``startup_time.json`` and ``startup_time.md`` in ``--out``."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each call")
    parser.add_argument("--data", type=Path, default=None, help="a pirf data file for `pirf data info`")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the results")
    parser.add_argument("--note", default="", help="a remark written with the results (the machine's load)")
    args = parser.parse_args()
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        data_file = args.data or make_data_file(Path(tmp))
        rows = measure(data_file, args.repeats)
    meta = {
        "command": shlex.join(["python", "benchmarks/startup_time.py", *without_note(sys.argv[1:])]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "repeats": args.repeats,
        "load_before": load_before,
        "load_after": load_average(),
        "note": args.note,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup_time.json").write_text(json.dumps({"meta": meta, "calls": rows}, indent=2) + "\n")
    text = markdown(meta, rows)
    (args.out / "startup_time.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
