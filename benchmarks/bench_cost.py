"""Test-time cost of the bench's methods, timed alone on an otherwise idle machine.

    python benchmarks/bench_cost.py [--bench runs/bench/cpu] [--benchmark darcy] [--repeat 2]

A bench's own cost column is measured while it runs, often beside other jobs. This re-times the
finished cells of one benchmark one after the other (the same models, the same chosen guidance
settings, the same n and seeds), keeps the fastest of ``--repeat`` runs, and writes
``benchmarks/results/bench_cost_<benchmark>.{json,md}``: seconds per 100 samples, network calls
per sample, and the ratio to the base model's at the same N (fastest runs), with the slowest run
beside it to show the machine's run-to-run spread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from pirf.bench.cells import BenchContext, chain_for, draw
from pirf.bench.config import GRADIENT_ROWS, BenchConfig
from pirf.bench.runner import RowModels, cell_path
from pirf.config import from_dict
from pirf.evaluation.report import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = ("base", "dps", "cocogen", "pidm", "pirf")


def time_cell(
    cfg: BenchConfig, ctx: BenchContext, models: RowModels, row: str, steps: int, repeat: int
) -> dict:
    setting = json.loads(cell_path(Path(cfg.out), ctx.benchmark, row, steps).read_text()).get("setting") or {}
    chain = chain_for(cfg, ctx, row, setting)
    model, record = models.get(row)
    runs = [draw(cfg, ctx, model, record, steps, chain=chain) for _ in range(repeat)]
    best = min(runs, key=lambda s: s.seconds)
    seconds = [100 * s.seconds / len(s.fields) for s in runs]
    return {
        "method": row,
        "steps": steps,
        "n": len(best.fields),
        "seconds_per_100": min(seconds),
        "slowest_per_100": max(seconds),
        "network_calls_per_sample": best.nfe_per_sample,
        "gradients": row in GRADIENT_ROWS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("runs/bench/cpu"))
    parser.add_argument("--benchmark", default="darcy")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="*", help="step counts (default: the bench's)")
    args = parser.parse_args()
    cfg = from_dict(BenchConfig, json.loads((args.bench / "config.json").read_text()))
    cfg.out = str(args.bench)
    ctx = BenchContext.load(cfg, args.benchmark, cfg.base.format(benchmark=args.benchmark), progress=False)
    models = RowModels(cfg, ctx, progress=False)
    rows = []
    for row in ROWS:
        for steps in args.steps or cfg.steps:
            if cell_path(args.bench, args.benchmark, row, steps).exists():
                rows.append(time_cell(cfg, ctx, models, row, steps, args.repeat))
                print(rows[-1], flush=True)
    base = {r["steps"]: r["seconds_per_100"] for r in rows if r["method"] == "base"}
    for r in rows:
        r["x_base"] = r["seconds_per_100"] / base[r["steps"]] if r["steps"] in base else None
    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    )
    result = {"benchmark": args.benchmark, "machine": machine, "torch": torch.__version__, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"bench_cost_{args.benchmark}.json").write_text(json.dumps(result, indent=1))
    table = markdown_table(
        [
            "method",
            "N",
            "s / 100 samples (fastest)",
            "slowest",
            "x base",
            "calls / sample",
            "gradients at test time",
        ],
        [
            [
                r["method"],
                str(r["steps"]),
                f"{r['seconds_per_100']:.2f}",
                f"{r['slowest_per_100']:.2f}",
                f"{r['x_base']:.2f}",
                str(r["network_calls_per_sample"]),
                "yes" if r["gradients"] else "no",
            ]
            for r in rows
        ],
    )
    text = f"# Test-time cost on {args.benchmark} ({machine}, torch {torch.__version__})\n\n{table}\n"
    (RESULTS / f"bench_cost_{args.benchmark}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
