"""The README's main job on a busy machine: ``pirf demo`` timed beside CPU-bound jobs.

    python benchmarks/demo_under_load.py            # ~25 min on 2 cores; start it on an idle machine
    python benchmarks/demo_under_load.py --idle     # also time the demo alone first (~10 min more)

Runs the whole ``pirf demo`` process (start-up, reference solving, base scoring, the fine-tune,
the comparison, the figures) beside ``--jobs`` pure-Python busy loops (another user's jobs) that
start 60 s before it, so that the 1-minute load average, which pirf's thread choice reads, sees
them. Reports the wall time against the time the README states for the demo on idle cores (the
first-screen line ``pirf demo ... (~N min ...)``) and pirf's thread line. Writes
benchmarks/results/demo_under_load.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threads_under_load import RESULTS, busy_jobs, thread_line, timed_output

README = Path(__file__).resolve().parents[1] / "README.md"
COMMAND = ["pirf", "demo"]


def stated_minutes(readme: Path = README) -> float:
    """The demo's idle time the README's first screen states: ``pirf demo  # ... (~N min ...)``."""
    for line in readme.read_text().splitlines():
        found = re.match(r"pirf demo\s+#.*\(~(\d+(?:\.\d+)?) min", line)
        if found:
            return float(found.group(1))
    raise SystemExit(f"{readme} has no 'pirf demo  # ... (~N min' line to compare against")


def result_lines(stdout: str, keep: int = 6) -> list[str]:
    """The demo's closing lines (its comparison), without blank lines."""
    return [ln.rstrip() for ln in stdout.splitlines() if ln.strip()][-keep:]


def timed_demo(out: Path) -> dict[str, object]:
    """One whole ``pirf demo`` process: wall seconds, its thread line and its closing lines."""
    seconds, stdout = timed_output(COMMAND, out)
    return {"seconds": round(seconds, 1), "threads_line": thread_line(stdout), "result": result_lines(stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2, help="CPU-bound jobs beside the demo")
    parser.add_argument("--idle", action="store_true", help="time the demo alone first as well")
    parser.add_argument("--allowed", type=float, default=2.5, help="allowed factor over the stated time")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    stated_s = 60.0 * stated_minutes()
    load_before = os.getloadavg()
    rows: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        if args.idle:
            rows["idle"] = timed_demo(out)
        with busy_jobs(args.jobs):
            rows[f"beside {args.jobs} busy jobs"] = timed_demo(out)
    for row in rows.values():
        row["x_stated"] = round(float(row["seconds"]) / stated_s, 2)
    meta = {
        "command": " ".join(COMMAND),
        "stated_idle_s": stated_s,
        "allowed_x_stated": args.allowed,
        "jobs": args.jobs,
        "machine": f"{platform.machine()}, {cores} cores",
        "load_before": [round(v, 2) for v in load_before],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo_under_load.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    flag = " --idle" if args.idle else ""
    lines = [
        f"Measured with `python benchmarks/demo_under_load.py --jobs {args.jobs}{flag}` on "
        f"{meta['machine']}; load average before {meta['load_before']}.",
        "",
        f"`{meta['command']}`, whole-process wall time; the README states ~{stated_s / 60:.0f} min on "
        f"idle cores, and a busy machine may take at most {args.allowed}x that.",
        "",
        "| setting | wall s | x README's idle time | within | pirf's thread line |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        within = "yes" if float(row["x_stated"]) <= args.allowed else "no"
        lines.append(f"| {name} | {row['seconds']} | {row['x_stated']} | {within} | {row['threads_line']} |")
    for name, row in rows.items():
        lines += ["", f"Closing lines, {name}:", "", "```", *row["result"], "```"]
    (RESULTS / "demo_under_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
