"""How long a command leaves its user looking at an unchanged screen: the longest silent phase.

    python benchmarks/silent_phases.py                         # pirf demo, ~6-10 min on 2 idle cores
    python benchmarks/silent_phases.py -- pirf sample poisson --n 64 --out /tmp/s --overwrite

Runs the command in a pseudo-terminal (as a user's shell does, so progress bars draw as they do
for a person) and timestamps every change of what it shows: each chunk of output, with the
terminal's control sequences removed, that differs from the last one. A progress bar redrawn
without moving (the same count, the same ``-:--:--``) is no change; a bar that advances, an ETA
that ticks and a new line are. Reports the longest interval without a change, what was on the
screen when it began and what ended it, and every interval over ``--limit`` seconds (default 5,
the target of issue 22). Writes benchmarks/results/silent_phases.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import pty
import re
import select
import subprocess
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|[\x00-\x08\x0b-\x1f\x7f]")


def visible(chunk: bytes) -> str:
    """The text a chunk of terminal output shows: control sequences and carriage returns removed,
    whitespace runs collapsed."""
    text = CONTROL.sub("", chunk.decode("utf-8", errors="replace"))
    return " ".join(text.split())


def changes(command: list[str], columns: int = 100) -> tuple[list[tuple[float, str]], int]:
    """Run ``command`` in a pseudo-terminal; return (seconds since start, text shown) at every
    change of the visible output, and the command's exit code."""
    leader, follower = pty.openpty()
    env = os.environ | {"COLUMNS": str(columns), "LINES": "40", "TERM": "xterm-256color"}
    t0 = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    events: list[tuple[float, str]] = [(0.0, "(started)")]
    while True:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the command closed the terminal
                break
            if not chunk:
                break
            text = visible(chunk)
            if text and text != events[-1][1]:
                events.append((time.perf_counter() - t0, text))
        elif process.poll() is not None:
            break
    code = process.wait()
    os.close(leader)
    events.append((time.perf_counter() - t0, "(exited)"))
    return events, code


def silences(events: list[tuple[float, str]], limit: float) -> list[dict[str, object]]:
    """Every interval between successive changes longer than ``limit`` seconds, longest first."""
    gaps = [
        {
            "seconds": round(after[0] - before[0], 1),
            "at_s": round(before[0], 1),
            "showing": before[1][-160:],
            "ended_by": after[1][:160],
        }
        for before, after in itertools.pairwise(events)
    ]
    longest = sorted(gaps, key=lambda gap: -float(gap["seconds"]))
    return [gap for gap in longest if float(gap["seconds"]) > limit] or longest[:1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=float, default=5.0, help="seconds a silence may last")
    parser.add_argument("command", nargs="*", help="the command (after --); default: pirf demo")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        command = args.command or ["pirf", "demo", "--out", str(Path(tmp) / "demo"), "--overwrite"]
        events, code = changes(command)
    if code != 0:
        raise SystemExit(f"{' '.join(command)} exited {code}; last output: {events[-2][1][-400:]}")
    found = silences(events, args.limit)
    longest = max(float(gap["seconds"]) for gap in found)
    shown = " ".join(command)
    meta = {
        "command": shown,
        "limit_s": args.limit,
        "wall_s": round(events[-1][0], 1),
        "changes": len(events),
        "longest_silence_s": longest,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_before": [round(v, 2) for v in load_before],
    }
    RESULTS.mkdir(exist_ok=True)
    record = {"meta": meta, "silences": found}
    (RESULTS / "silent_phases.json").write_text(json.dumps(record, indent=2) + "\n")
    within = "within" if longest <= args.limit else "over"
    lines = [
        f"Measured with `python benchmarks/silent_phases.py` on {meta['machine']} (`{shown}`).",
        "",
        f"{meta['wall_s']} s wall, {meta['changes']} changes of the screen; the longest silence "
        f"{longest} s, {within} the {args.limit:g} s limit.",
        "",
        "| silence s | from s | showing | ended by |",
        "|---|---|---|---|",
    ]
    for gap in found:
        showing = str(gap["showing"]).replace("|", "/")
        ended = str(gap["ended_by"]).replace("|", "/")
        lines.append(f"| {gap['seconds']} | {gap['at_s']} | {showing} | {ended} |")
    (RESULTS / "silent_phases.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
