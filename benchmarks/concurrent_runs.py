"""Load test: many pirf commands at once, into separate outputs and into shared ones.

    python benchmarks/concurrent_runs.py                 # 8 separate runs + 4 shared pairs
    python benchmarks/concurrent_runs.py --small         # what tests/test_concurrent_runs.py runs

Each kind of run (``data generate``, ``sample``, ``evaluate``, ``finetune``; small sizes on the
Darcy model) is first run alone, twice over with different seeds, to get what it should write.
Then the eight runs start together, each into its own folder, and with them four pairs: the same
command twice into one shared output. Targets (docs/reliability.md, "Many runs at once"):

- every separate run exits 0 and writes exactly what it wrote alone (fields, samples, weights
  and residual statistics compared value for value; timings left out);
- every shared pair ends with one run that exits 0 and wrote the output its solo run wrote, and
  one that exits 2 with a message saying who holds the output (or, when the winner had already
  finished, that the output exists), and nothing else in the folder.

Writes ``benchmarks/results/concurrent_runs.json`` (``--out``). Every run uses one thread
(``OMP_NUM_THREADS=1``) so that results do not depend on how many run at once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "concurrent_runs.json"
REFUSALS = ("is being written by", "already exists", "exists")


@dataclass(frozen=True)
class Job:
    """One CLI run: its kind, its command (with OUT where the output goes), its output's name."""

    kind: str
    args: tuple[str, ...]
    output: str

    def command(self, folder: Path) -> list[str]:
        out = str(folder / self.output)
        return [sys.executable, "-m", "pirf.cli", *(a.replace("OUT", out) for a in self.args)]


def jobs(seed: int, small: bool) -> list[Job]:
    """The four kinds of run, with ``seed``."""
    n, steps = ("8", "4") if small else ("32", "10")
    s = str(seed)
    return [
        Job("data", ("data", "generate", "darcy", "--n", "24", "--seed", s, "--out", "OUT"), "data.h5"),
        Job(
            "sample", ("sample", "darcy", "--n", n, "--steps", steps, "--seed", s, "--out", "OUT"), "samples"
        ),
        Job(
            "evaluate", ("evaluate", "darcy", "--n", n, "--steps", steps, "--seed", s, "--out", "OUT"), "eval"
        ),
        Job(
            "finetune",
            (
                "finetune",
                "darcy",
                f"seed={s}",
                "iterations=3" if small else "iterations=6",
                "batch_size=2",
                "eval.every=3",
                "eval.n=4",
                "eval.n_reference=64",
                "checkpoint_every=2",
                "out=OUT",
            ),
            "finetune",
        ),
    ]


def launch(job: Job, folder: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIRF_CACHE": os.environ["PIRF_CACHE"]}
    return subprocess.Popen(
        job.command(folder), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return -9, "timed out\n" + err
    return proc.returncode, " ".join(err.split())


# -- what a run wrote, value for value ---------------------------------------------------------------
def _h5_arrays(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: found.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None
        )
    return found


def _numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    """The numbers of a JSON report, timings and speeds (``*_per_s``) and paths left out."""
    if isinstance(obj, dict):
        out: dict[str, float] = {}
        for key, value in obj.items():
            if any(
                word in str(key) for word in ("second", "per_s", "time", "created", "path", "command", "host")
            ):
                continue
            out.update(_numbers(value, f"{prefix}{key}."))
        return out
    if isinstance(obj, list):
        return {k: v for i, item in enumerate(obj) for k, v in _numbers(item, f"{prefix}{i}.").items()}
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {prefix.rstrip("."): float(obj)}
    return {}


def fingerprint(kind: str, output: Path) -> dict[str, Any]:
    """What a run of ``kind`` wrote to ``output``, in comparable form."""
    if kind == "data":
        return {k: v for k, v in _h5_arrays(output).items()}
    if kind == "sample":
        return {k: v for f in sorted(output.glob("*.h5")) for k, v in _h5_arrays(f).items()}
    if kind == "evaluate":
        return _numbers(json.loads((output / "report.json").read_text()))
    if kind == "finetune":
        return {k: v for f in sorted(output.glob("*.safetensors")) for k, v in load_file(f).items()}
    raise ValueError(kind)


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k]), equal_nan=True) for k in a)


# -- the test ----------------------------------------------------------------------------------------
def run(small: bool, timeout: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="pirf-concurrent-"))
    os.environ.setdefault("PIRF_CACHE", str(work / "cache"))
    try:
        return _run(work, small, timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, small: bool, timeout: float) -> dict[str, Any]:
    plan = [(f"{job.kind}-{seed}", job) for seed in (1, 2) for job in jobs(seed, small)]
    solo: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for name, job in plan:  # alone, one after another: what each should write
        code, err = finish(launch(job, work / "solo" / name), timeout)
        if code != 0:
            raise SystemExit(f"solo run {name} failed ({code}): {err[-2000:]}")
        solo[name] = fingerprint(job.kind, work / "solo" / name / job.output)
    solo_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    separate = {name: launch(job, work / "separate" / name) for name, job in plan}
    shared = {
        job.kind: [launch(job, work / "shared" / job.kind) for _ in range(2)]
        for _, job in plan[: len(plan) // 2]
    }
    rows: list[dict[str, Any]] = []
    for name, job in plan:
        code, err = finish(separate[name], timeout)
        output = work / "separate" / name / job.output
        equal = code == 0 and same(fingerprint(job.kind, output), solo[name])
        rows.append(
            {"run": name, "into": "own folder", "exit": code, "equals_solo": equal, "stderr": err[-400:]}
        )
    pairs: list[dict[str, Any]] = []
    for kind, procs in shared.items():
        results = [finish(p, timeout) for p in procs]
        job = next(j for n, j in plan if n == f"{kind}-1")
        folder = work / "shared" / kind
        codes = sorted(code for code, _ in results)
        refusal = next((err for code, err in results if code == 2), "")
        wrote = codes == [0, 2] and same(fingerprint(kind, folder / job.output), solo[f"{kind}-1"])
        leftovers = sorted(p.name for p in folder.iterdir() if p.name != job.output)
        pairs.append(
            {
                "kind": kind,
                "exits": codes,
                "winner_equals_solo": wrote,
                "refusal": refusal[-300:],
                "refusal_is_clear": any(word in refusal for word in REFUSALS) and "Traceback" not in refusal,
                "left_beside_output": leftovers,
            }
        )
    together_seconds = time.perf_counter() - t0
    passed = all(r["exit"] == 0 and r["equals_solo"] for r in rows) and all(
        p["winner_equals_solo"] and p["refusal_is_clear"] and not p["left_beside_output"] for p in pairs
    )
    return {
        "command": "python benchmarks/concurrent_runs.py" + (" --small" if small else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "separate_runs": rows,
        "shared_pairs": pairs,
        "solo_seconds": round(solo_seconds, 1),
        "together_seconds": round(together_seconds, 1),
        "passed": passed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="fewer samples and iterations")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds any one run may take")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    result = run(args.small, args.timeout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for row in result["separate_runs"]:
        print(f"{row['run']:12s} own folder   exit {row['exit']}  equals solo: {row['equals_solo']}")
    for pair in result["shared_pairs"]:
        print(
            f"{pair['kind']:12s} shared pair  exits {pair['exits']}  winner equals solo: "
            f"{pair['winner_equals_solo']}  clear refusal: {pair['refusal_is_clear']}"
        )
    print(
        f"passed: {result['passed']} "
        f"(solo {result['solo_seconds']} s, together {result['together_seconds']} s)"
    )
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
