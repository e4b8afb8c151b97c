"""The reliability measurements of docs/reliability.md: kill-and-resume and bad-input fuzzing.

    python benchmarks/reliability.py            # the long version (~20 min on 2 cores)
    python benchmarks/reliability.py --short    # what CI runs (the default test suite's part)
    python benchmarks/reliability.py --memory   # peak memory of `pirf sample` at n = 256 and 16384

Runs the kill-and-resume tests (`tests/test_kill_resume.py`, with ``-m slow`` too in the long
version), the fuzzers (`tests/test_fuzz.py`, the long hypothesis profile in the long version),
the numerical-fault and disk tests, counting every SIGKILL the kill tests sent and every input
the fuzzers generated, and writes ``benchmarks/results/reliability/<version>.json``: the counts,
the pytest outcome and the machine (``--memory``: the peak memory of ``pirf sample``, in
``memory.json``).
Nothing is lost or misreported when every test passed: each kill test compares the resumed run
with an uninterrupted one bit for bit, each fuzz case checks for a `PirfError` with a fix, exit
code 2 and no partial output.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "reliability"
TESTS = ["tests/test_kill_resume.py", "tests/test_fuzz.py", "tests/test_faults.py", "tests/test_disk.py"]


def _pytest(args: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    return proc.returncode, (proc.stdout + proc.stderr)[-2000:], time.perf_counter() - t0


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def measure(long: bool) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        kills, fuzz = Path(scratch) / "kills.jsonl", Path(scratch) / "fuzz.json"
        env = os.environ | {
            "PIRF_KILL_LOG": str(kills),
            "PIRF_FUZZ_REPORT": str(fuzz),
            "OMP_NUM_THREADS": "1",
        }
        if long:
            env["PIRF_FUZZ_LONG"] = "1"
        marker = ["-m", "slow or not slow"] if long else []
        code, tail, seconds = _pytest([*marker, *TESTS], env)
        kill_log = _lines(kills)
        fuzz_counts = json.loads(fuzz.read_text()) if fuzz.exists() else {}
    by_command = collections.Counter(k["command"] for k in kill_log)
    return {
        "version": "long" if long else "short",
        "passed": code == 0,
        "pytest_tail": tail,
        "seconds": round(seconds, 1),
        "kills": {
            "total": len(kill_log),
            "at_named_points": sum("point" in k for k in kill_log),
            "at_random_times": sum("after_seconds" in k for k in kill_log),
            "by_command": dict(sorted(by_command.items())),
            "named_points": sorted({k["point"] for k in kill_log if "point" in k}),
        },
        "fuzz": fuzz_counts,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }


PEAK_RSS = """
import resource, sys
from pirf.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit_:
    assert not exit_.code, exit_.code
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def sample_memory(counts: tuple[int, ...] = (256, 16384)) -> dict[str, float]:
    """Peak resident memory (MiB) of ``pirf sample darcy --steps 2`` drawing each of ``counts``
    samples: streamed to the file batch by batch, it should not grow with n (16384 Darcy samples
    are 128 MiB of float32)."""
    peaks = {}
    with tempfile.TemporaryDirectory() as scratch:
        for n in counts:
            argv = ["sample", "darcy", "--n", str(n), "--steps", "2", "--out", f"{scratch}/{n}"]
            proc = subprocess.run(
                [sys.executable, "-c", PEAK_RSS, *argv], cwd=ROOT, capture_output=True, text=True, check=True
            )
            peaks[str(n)] = round(int(proc.stdout.split()[-1]) / 1024, 1)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="the CI version (default tests only)")
    parser.add_argument("--memory", action="store_true", help="only the memory of pirf sample")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.memory:
        result = {"sample_peak_rss_mib": sample_memory(), "passed": True}
        path = OUT / "memory.json"
    else:
        result = measure(long=not args.short)
        path = OUT / f"{result['version']}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "pytest_tail"}, indent=1))
    print(f"wrote {path}")
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
