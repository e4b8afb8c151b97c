"""Forward and inverse problems from sparse observations: every task, every method, every prior.

    python benchmarks/inverse_problems.py                        # all tasks, base priors
    python benchmarks/inverse_problems.py --tasks darcy-forward darcy-inverse --n 16

For each task (a benchmark and what is observed, below) and each prior (the shipped base model
``NAME`` and, where shipped, its PIRF fine-tune ``NAME-pirf``) it runs `pirf reconstruct` with
each method on ``--n`` held-out cases (default 64; fresh solver data, seed 20001, never seen in
training), the weights tuned on ``--tune`` further cases of the same file, and records the
errors, the residual against the data floor and the cost per case. Results:
``benchmarks/results/inverse_problems.json`` (one entry per task x prior x method, replaced when
run again) and ``.md`` (the table of docs/inverse.md).

The tasks follow DiffusionPDE (Huang et al. 2024), at pirf's CPU resolutions: forward problems
observe the whole coefficient or source, inverse problems 3% of the solution's pixels.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from pirf import pdes
from pirf.data import generate_dataset, read_info
from pirf.errors import PirfError
from pirf.evaluation.reference import cache_dir
from pirf.models.loading import zoo_names
from pirf.reconstruct import run_reconstruction

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "inverse_problems.json"
HELD_OUT_SEED = 20_001
TASKS: dict[str, tuple[str, str]] = {
    "darcy-forward": ("darcy", "a:1.0"),
    "darcy-inverse": ("darcy", "u:0.03"),
    "darcy-both": ("darcy", "a:0.03,u:0.03"),
    "poisson-forward": ("poisson", "f:1.0"),
    "poisson-inverse": ("poisson", "u:0.03"),
    "helmholtz-forward": ("helmholtz", "f:1.0"),
    "helmholtz-inverse": ("helmholtz", "u:0.03"),
    "burgers-sparse": ("burgers", "u:0.05"),
    "kolmogorov-sparse": ("kolmogorov", "w0:0.05,w1:0.05,w2:0.05"),
}
"""Task -> (benchmark, observed share of each field)."""
METHODS = ("guidance", "projection")


def held_out_file(name: str, n: int) -> Path:
    """``n`` freshly solved samples of benchmark ``name`` (seed `HELD_OUT_SEED`), cached."""
    path = cache_dir() / "inverse" / f"{name}_{HELD_OUT_SEED}_{n}.h5"
    try:
        if read_info(path).n == n:
            return path
    except PirfError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    generate_dataset(pdes.get(name), n, path, seed=HELD_OUT_SEED, overwrite=True)
    return path


def run_task(task: str, prior: str, method: str, n: int, tune: int, steps: int) -> dict[str, Any]:
    name, observe = TASKS[task]
    data = held_out_file(name, n + tune)
    result = run_reconstruction(prior, data, observe, n=n, steps=steps, method=method, tune_cases=tune)
    report = result.report
    return {
        "task": task,
        "prior": prior,
        "method": method,
        "observe": observe,
        "weights": {k: v for k, v in report["method"].items() if k != "name"},
        "errors": {
            k: {m: e[m] for m in ("metric", "observed_fraction", "mean", "median")}
            for k, e in report["errors"].items()
        },
        "ratio_to_floor": report["ratio_to_floor"],
        "cost": report["cost"],
        "n": n,
        "steps": steps,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| task | prior | method | error per field (mean) | residual / data's | calls / gradients |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        errors = ", ".join(
            f"{f} {e['mean']:.3g}{' (rate)' if e['metric'] == 'error_rate' else ''}"
            for f, e in r["errors"].items()
            if e["observed_fraction"] < 1.0
        )
        ratio = r["ratio_to_floor"].get("all", float("nan"))
        cost = r["cost"]
        lines.append(
            f"| {r['task']} | {r['prior']} | {r['method']} | {errors} | {ratio:.3g} | "
            f"{cost['network_calls_per_case']} / {cost['gradient_calls_per_case']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--tune", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    previous = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    shipped = set(zoo_names())
    fresh = []
    for task in args.tasks:
        name = TASKS[task][0]
        for prior in (p for p in (name, f"{name}-pirf") if p in shipped):
            for method in args.methods:
                row = run_task(task, prior, method, args.n, args.tune, args.steps)
                print(table([row]).splitlines()[-1], flush=True)
                fresh.append(row)
    keys = {(r["task"], r["prior"], r["method"]) for r in fresh}
    rows = [r for r in previous if (r["task"], r["prior"], r["method"]) not in keys] + fresh
    rows.sort(key=lambda r: (list(TASKS).index(r["task"]), r["prior"], r["method"]))
    meta = {
        "command": "python benchmarks/inverse_problems.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text(f"`{meta['command']}` ({meta['machine']})\n\n{table(rows)}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
