"""What pirf's thread choice buys on a busy machine: one command timed idle and beside CPU-bound jobs.

    python benchmarks/threads_under_load.py            # ~6 min on 2 cores; run it on an idle machine

Times ``pirf sample poisson --n 4 --steps 20`` (a whole process: start-up, model load, 20 Heun
steps) in three settings, ``--repeats`` runs each, and reports the median wall seconds:

- idle, threads chosen by pirf (all cores when the load is low);
- beside ``--jobs`` CPU-bound processes (pure-Python busy loops, as another user's job), with
  ``--threads`` set to every core (torch's default, what pirf did before it chose);
- beside the same jobs, threads chosen by pirf (the load leaves fewer cores free).

The busy jobs start 60 s before the first loaded timing so that the 1-minute load average sees
them. Writes benchmarks/results/threads_under_load.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
COMMAND = ["pirf", "sample", "poisson", "--n", "4", "--steps", "20", "--seed", "0"]
BUSY = "while True: pass"


@contextlib.contextmanager
def busy_jobs(jobs: int, settle: float = 60.0) -> Iterator[None]:
    """``jobs`` CPU-bound processes (another user's jobs) running while the block runs; they start
    ``settle`` seconds before it so that the 1-minute load average, which pirf reads, sees them."""
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(jobs)]
    try:
        time.sleep(settle)
        yield
    finally:
        for job in busy:
            job.kill()


def timed(args: list[str], out: Path) -> tuple[float, str]:
    """Wall seconds of one ``pirf`` process writing to ``out``, and the thread line it printed."""
    seconds, stdout = timed_output(args, out)
    return seconds, thread_line(stdout)


def thread_line(stdout: str) -> str:
    """The ``threads: ...`` line a computing verb prints first, or "" if there is none."""
    return next((ln for ln in stdout.splitlines() if ln.startswith("threads:")), "")


def timed_output(args: list[str], out: Path) -> tuple[float, str]:
    """Wall seconds of one ``pirf`` process writing to ``out`` (with ``--overwrite``), and its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PIRF_THREADS")}
    t0 = time.perf_counter()
    done = subprocess.run([*args, "--out", str(out), "--overwrite"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    return seconds, done.stdout


def series(args: list[str], repeats: int, out: Path) -> dict[str, object]:
    """``repeats`` timings of ``args``: their median, all of them, and the thread line."""
    runs = [timed(args, out) for _ in range(repeats)]
    return {
        "median_s": statistics.median(s for s, _ in runs),
        "seconds": [round(s, 2) for s, _ in runs],
        "threads_line": runs[-1][1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2, help="CPU-bound jobs beside the timed command")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load_before = os.getloadavg()
    rows: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "samples"
        timed(COMMAND, out)  # warm the file cache and the held-out reference
        rows["idle, threads chosen by pirf"] = series(COMMAND, args.repeats, out)
        with busy_jobs(args.jobs):
            every = ["pirf", "--threads", str(cores), *COMMAND[1:]]
            rows[f"{args.jobs} busy jobs, --threads {cores} (torch's default)"] = series(
                every, args.repeats, out
            )
            rows[f"{args.jobs} busy jobs, threads chosen by pirf"] = series(COMMAND, args.repeats, out)
    meta = {
        "command": " ".join(COMMAND),
        "cores": cores,
        "jobs": args.jobs,
        "repeats": args.repeats,
        "machine": f"{platform.machine()}, {cores} cores",
        "load_before": [round(v, 2) for v in load_before],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "threads_under_load.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        "Measured with `python benchmarks/threads_under_load.py "
        f"--jobs {args.jobs} --repeats {args.repeats}` "
        f"on {meta['machine']}; load average before {meta['load_before']}.",
        "",
        f"`{meta['command']}`, whole-process wall seconds (median of {args.repeats}).",
        "",
        "| setting | median s | runs | pirf's thread line |",
        "|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['median_s']:.1f} | {row['seconds']} | {row['threads_line']} |")
    (RESULTS / "threads_under_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
