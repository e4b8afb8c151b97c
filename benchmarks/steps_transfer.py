"""One fine-tune for every step count? Models scored at several step counts from the same seeds.

    python benchmarks/steps_transfer.py darcy runs/finetune/darcy-n20 runs/finetune/darcy-anyn

Each model (a zoo name, a run folder or a model file) draws ``--n`` samples (seed 0) at every
step count of ``--steps`` (default 10 20 40 80, Heun) and is scored as `pirf evaluate` scores
(`pirf.evaluation.runner.run_evaluation`): median residual MSE in physical units (Darcy: after
the phase projection the reward sees) and pirf's fidelity score against the model's held-out
reference set (lower is better for both). The first model is the baseline of the ratios.

Writes benchmarks/results/steps_transfer_<pde>.{json,md} (``--name`` replaces ``<pde>``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

from pirf.evaluation.runner import run_evaluation

RESULTS = Path(__file__).resolve().parent / "results"


def score(model: str, steps: list[int], n: int) -> dict[str, Any]:
    """Median residual MSE and fidelity score of ``model`` at each step count, with the floor."""
    evaluation = run_evaluation(model, n=n, steps=steps, seed=0, progress=False)
    report = evaluation.report
    per_steps = {
        str(run["steps"]): {
            "residual": run["residual"]["all"]["median_mse"],
            "fidelity": run["fidelity"]["fidelity_score"],
        }
        for run in report["runs"]
    }
    return {
        "model": model,
        "pde": report["model"]["pde"],
        "floor": report["floor"]["all"]["median_mse"],
        "steps": per_steps,
    }


def markdown(rows: list[dict[str, Any]], steps: list[int], command: str) -> str:
    """Two tables (residual, fidelity): a row per model, a column per step count."""
    floor = rows[0]["floor"]
    lines = [
        f"Measured with `{command}` on {platform.machine()}, {os.cpu_count()} cores; "
        f"{rows[0]['pde']}, data floor (median residual MSE of the training data) {floor:.3g}.",
        "",
        "Median residual MSE (physical units; x: over the data floor):",
        "",
        "| model | " + " | ".join(f"N = {s}" for s in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for row in rows:
        cells = [
            f"{row['steps'][str(s)]['residual']:.3g} ({row['steps'][str(s)]['residual'] / floor:.2g}x)"
            for s in steps
        ]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    lines += ["", "Fidelity score (0 = the data):", "", lines[4], lines[5]]
    for row in rows:
        cells = [f"{row['steps'][str(s)]['fidelity']:.3g}" for s in steps]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40, 80])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--name", default=None, help="results file stem suffix (default: the PDE)")
    args = parser.parse_args()
    rows = [score(m, args.steps, args.n) for m in args.models]
    command = "python benchmarks/steps_transfer.py " + " ".join(args.models)
    command += f" --steps {' '.join(map(str, args.steps))} --n {args.n}"
    name = args.name or rows[0]["pde"]
    RESULTS.mkdir(exist_ok=True)
    meta = {"command": command, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "n": args.n}
    (RESULTS / f"steps_transfer_{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    text = markdown(rows, args.steps, command)
    (RESULTS / f"steps_transfer_{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
