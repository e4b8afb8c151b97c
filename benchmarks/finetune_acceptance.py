"""Acceptance of PIRF fine-tuning on the five benchmarks at the CPU default scale (issue 4).

    python benchmarks/finetune_acceptance.py                 # all five; writes results/finetune_acceptance.md
    python benchmarks/finetune_acceptance.py darcy --n 256   # one benchmark

For each benchmark this runs `pirf demo --benchmark NAME` (fine-tune the shipped base model with
the shipped config ``configs/finetune/NAME.yaml``, then sample base and fine-tuned model from the
same ``n`` seeds with 20 Heun steps and score both), and samples the base model once more from
other seeds: how far each fidelity term moves between two sample sets of the *same* model is its
sampling noise, printed beside the change so that a "+30%" on a term that moves 40% by chance is
read as such.

Targets (issue 4): median residual MSE at most 1/10 of the base model's, over all pixels and on
interior pixels; every fidelity term at most 1.2x the base model's. Each is reported as met or
not; nothing is relaxed. Runs land in ``runs/acceptance/NAME``; ``--reuse`` keeps finished ones.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from pirf.demo import fidelity_terms, run_demo
from pirf.evaluation.report import markdown_table
from pirf.evaluation.runner import run_evaluation

RESULTS = Path(__file__).resolve().parent / "results"
RESIDUAL_TARGET = 10.0  # base / fine-tuned median residual MSE, all and interior pixels
FIDELITY_TOLERANCE = 0.2  # each fidelity term <= (1 + tolerance) x the base model's
BENCHMARKS = ("darcy", "poisson", "helmholtz", "burgers", "kolmogorov")  # the shipped base models


def judge(comparison: dict[str, Any], noise: dict[str, float]) -> dict[str, Any]:
    """Which targets a base-vs-fine-tuned comparison meets."""
    reductions = {r: comparison["residual"][r]["reduction"] for r in ("all", "interior")}
    terms = {
        name: {
            "ratio": v["finetuned"] / v["base"] if v["base"] > 0 else math.inf,
            "met": v["finetuned"] <= (1 + FIDELITY_TOLERANCE) * v["base"],
            "noise": noise[name],
        }
        for name, v in comparison["fidelity"].items()
    }
    return {
        "residual": {r: {"reduction": x, "met": x >= RESIDUAL_TARGET} for r, x in reductions.items()},
        "fidelity": terms,
        "all_met": all(x >= RESIDUAL_TARGET for x in reductions.values())
        and all(t["met"] for t in terms.values()),
    }


def run_benchmark(name: str, n: int, out: Path, reuse: bool) -> dict[str, Any]:
    """Fine-tune and compare one benchmark (see the module docstring)."""
    folder = out / name
    if reuse and (folder / "acceptance.json").exists():
        return json.loads((folder / "acceptance.json").read_text())
    t0 = time.perf_counter()
    demo = run_demo(name, folder, n=n, overwrite=True)
    kw: dict[str, Any] = {"n": n, "steps": [demo["settings"]["steps"]], "progress": True}
    base_a = run_evaluation(name, seed=0, **kw).report
    base_b = run_evaluation(name, seed=1, **kw).report
    a, b = fidelity_terms(base_a["runs"][0]), fidelity_terms(base_b["runs"][0])
    noise = {k: abs(b[k] - a[k]) / a[k] if a[k] > 0 else math.nan for k in a}
    result = {
        "benchmark": name,
        "n": n,
        "demo": demo,
        "noise": noise,
        "verdict": judge(demo["comparison"], noise),
        "seconds": time.perf_counter() - t0,
    }
    (folder / "acceptance.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    """Two tables: residual per region, and fidelity terms with their sampling noise."""
    res_rows, fid_rows = [], []
    for r in results:
        c, v, ft = r["demo"]["comparison"], r["verdict"], r["demo"]["finetune"]
        chosen = ft["selected"]["chosen"]
        res_rows.append(
            [
                r["benchmark"],
                str(r["n"]),
                f"{ft['iterations']} its, {ft['seconds'] / 60:.0f} min; "
                f"kept {chosen['weights']}, alpha {chosen['alpha']}",
                *(
                    f"{c['residual'][g]['base']:.3g} → {c['residual'][g]['finetuned']:.3g} "
                    f"({c['residual'][g]['reduction']:.1f}x) / {c['residual'][g]['floor']:.2g}"
                    for g in ("all", "interior")
                ),
                "yes" if all(x["met"] for x in v["residual"].values()) else "no",
            ]
        )
        for term, t in v["fidelity"].items():
            f = c["fidelity"][term]
            fid_rows.append(
                [
                    r["benchmark"],
                    term,
                    f"{f['base']:.3g}",
                    f"{f['finetuned']:.3g}",
                    f"{100 * (t['ratio'] - 1):+.0f}%",
                    f"{100 * t['noise']:.0f}%",
                    "yes" if t["met"] else "no",
                ]
            )
    return "\n".join(
        [
            "# PIRF acceptance on the CPU default scale",
            "",
            "Command: `python benchmarks/finetune_acceptance.py NAME --n N` (N per row). 20 Heun steps; "
            "base and fine-tuned model sampled from the same N seeds; median per-sample residual MSE "
            "(physical units) as base → fine-tuned (reduction) / data floor.",
            "",
            markdown_table(
                [
                    "benchmark",
                    "N",
                    "fine-tune",
                    "residual, all",
                    "residual, interior",
                    f">= {RESIDUAL_TARGET:.0f}x",
                ],
                res_rows,
            ),
            "",
            "Fidelity terms (0 = the held-out data; lower is better). *noise*: how much the term moves "
            "between two sample sets of the base model (seeds 0 and 1), relative.",
            "",
            markdown_table(
                [
                    "benchmark",
                    "term",
                    "base",
                    "fine-tuned",
                    "change",
                    "noise",
                    f"<= {1 + FIDELITY_TOLERANCE:.1f}x base",
                ],
                fid_rows,
            ),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="*", default=list(BENCHMARKS))
    parser.add_argument("--n", type=int, default=256, help="samples per model (default 256)")
    parser.add_argument("--out", type=Path, default=Path("runs/acceptance"))
    parser.add_argument("--reuse", action="store_true", help="keep benchmarks already finished in --out")
    args = parser.parse_args()
    store = RESULTS / "finetune_acceptance.json"
    for name in args.benchmarks:  # each result lands at once: a later failure keeps the earlier ones
        result = run_benchmark(name, args.n, args.out, args.reuse)
        done = {r["benchmark"]: r for r in json.loads(store.read_text())} if store.exists() else {}
        done[name] = result  # merged with what is there now (another run may have added to it)
        results = [done[b] for b in BENCHMARKS if b in done]
        RESULTS.mkdir(exist_ok=True)
        store.write_text(json.dumps(results, indent=1, default=float))
        (RESULTS / "finetune_acceptance.md").write_text(markdown(results))
    print((RESULTS / "finetune_acceptance.md").read_text())


if __name__ == "__main__":
    main()
