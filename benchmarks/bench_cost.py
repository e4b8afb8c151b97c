"""Test-time cost of the bench's methods, re-timed paired so that the ratios do not depend on what
else shared the machine.

    python benchmarks/bench_cost.py [--bench runs/bench/cpu] [--benchmark darcy] [--pairs 3] [--warmup 1]

A bench's own cost column is measured while it runs, often beside other jobs. This re-times the
finished cells of one benchmark (the same models, the same chosen guidance settings, the same n
and seeds) in this one process, paired (`pirf.evaluation.timing.paired_timing`): at each N,
``--warmup`` untimed draws of every row, then ``--pairs`` rounds in which every row draws its
cell's samples once, back to back, in a balanced order (`round_order`, a Williams design). A draw's seconds
are the bench's own cost clock (`Samples.seconds`: the sampling batches, not the model loading).
Writes ``<out>/bench_cost_<benchmark>.{json,md}``: seconds per 100 samples (median over the
rounds, fastest and slowest), network calls per sample, and "x base": the median over the rounds
of the ratio to the base model's draw *of the same round*, with its interquartile range and range.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from pirf.bench.cells import BenchContext, chain_for, draw
from pirf.bench.config import GRADIENT_ROWS, BenchConfig
from pirf.bench.runner import RowModels, cell_path
from pirf.config import from_dict
from pirf.evaluation.markdown import markdown_table
from pirf.evaluation.timing import Measurement, PairedTimings, method_note, paired_timing

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = ("base", "dps", "cocogen", "pidm", "pgdiffusion", "pirf")
REFERENCE = "base"


def cell_draw(
    cfg: BenchConfig, ctx: BenchContext, models: RowModels, row: str, steps: int, last: dict
) -> Callable[[], float]:
    """A call that draws the cell's samples and returns the bench's seconds for them (the last
    draw's samples go to ``last[row]``)."""
    setting = json.loads(cell_path(Path(cfg.out), ctx.benchmark, row, steps).read_text()).get("setting") or {}
    chain = chain_for(cfg, ctx, row, setting)
    model, record = models.get(row)

    def call() -> float:
        last[row] = draw(cfg, ctx, model, record, steps, chain=chain)
        return last[row].seconds

    return call


def time_cells(
    cfg: BenchConfig, ctx: BenchContext, models: RowModels, steps: int, args: argparse.Namespace
) -> tuple[list[dict], PairedTimings | None]:
    """The rows of every finished cell at ``steps``, timed paired."""
    present = [r for r in ROWS if cell_path(args.bench, args.benchmark, r, steps).exists()]
    if not present:
        return [], None
    last: dict = {}
    calls = {row: cell_draw(cfg, ctx, models, row, steps, last) for row in present}
    reference = REFERENCE if REFERENCE in calls else present[0]

    def report(r: int, name: str, m: Measurement) -> None:
        print(f"N={steps} round {r + 1}/{args.pairs}: {m.seconds:7.2f} s  {name}", flush=True)

    timings = paired_timing(calls, reference, args.pairs, args.warmup, report=report)
    rows = []
    for row, s in timings.summaries().items():
        n = len(last[row].fields)
        ratios = {
            "x_base": None,
            "x_base_q1": None,
            "x_base_q3": None,
            "x_base_min": None,
            "x_base_max": None,
        }
        if reference == REFERENCE:
            ratios = {
                "x_base": s.ratio_median,
                "x_base_q1": s.ratio_q1,
                "x_base_q3": s.ratio_q3,
                "x_base_min": s.ratio_min,
                "x_base_max": s.ratio_max,
            }
        rows.append(
            {
                "method": row,
                "steps": steps,
                "n": n,
                "seconds_per_100": 100 * s.median / n,
                "fastest_per_100": 100 * s.min / n,
                "slowest_per_100": 100 * s.max / n,
                **ratios,
                "network_calls_per_sample": last[row].nfe_per_sample,
                "gradients": row in GRADIENT_ROWS,
            }
        )
    return rows, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("runs/bench/cpu"))
    parser.add_argument("--benchmark", default="darcy")
    parser.add_argument("--pairs", type=int, help="timed rounds, each draws every row once (default 3)")
    parser.add_argument("--repeat", type=int, help="the old name of --pairs")
    parser.add_argument("--warmup", type=int, default=1, help="untimed draws of each row first")
    parser.add_argument("--steps", type=int, nargs="*", help="step counts (default: the bench's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for bench_cost_<benchmark>.*")
    args = parser.parse_args()
    args.pairs = args.pairs or args.repeat or 3
    cfg = from_dict(BenchConfig, json.loads((args.bench / "config.json").read_text()))
    cfg.out = str(args.bench)
    ctx = BenchContext.load(cfg, args.benchmark, cfg.base.format(benchmark=args.benchmark), progress=False)
    models = RowModels(cfg, ctx, progress=False)
    rows, raw = [], {}
    for steps in args.steps or cfg.steps:
        found, timings = time_cells(cfg, ctx, models, steps, args)
        rows += found
        if timings is not None:
            raw[str(steps)] = timings.to_dict()
    rows.sort(key=lambda r: (ROWS.index(r["method"]), r["steps"]))
    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    )
    call = f"call (a draw of the cell's {cfg.n} samples)"
    note = method_note(args.pairs, args.warmup, REFERENCE, call=call)
    result = {
        "benchmark": args.benchmark,
        "machine": machine,
        "torch": torch.__version__,
        "pairs": args.pairs,
        "warmup": args.warmup,
        "measured": note,
        "rows": rows,
        "rounds": raw,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"bench_cost_{args.benchmark}.json").write_text(json.dumps(result, indent=1))

    def ratio(r: dict, key: str, low: str, high: str) -> str:
        return "-" if r[key] is None else f"{r[key]:.2f} ({r[low]:.2f}-{r[high]:.2f})"

    table = markdown_table(
        [
            "method",
            "N",
            "s / 100 samples, median",
            "fastest",
            "slowest",
            "x base, median (IQR)",
            "x base, range",
            "calls / sample",
            "gradients at test time",
        ],
        [
            [
                r["method"],
                str(r["steps"]),
                f"{r['seconds_per_100']:.2f}",
                f"{r['fastest_per_100']:.2f}",
                f"{r['slowest_per_100']:.2f}",
                ratio(r, "x_base", "x_base_q1", "x_base_q3"),
                "-" if r["x_base"] is None else f"{r['x_base_min']:.2f}-{r['x_base_max']:.2f}",
                str(r["network_calls_per_sample"]),
                "yes" if r["gradients"] else "no",
            ]
            for r in rows
        ],
    )
    flags = f"--bench {args.bench} --benchmark {args.benchmark} --pairs {args.pairs} --warmup {args.warmup}"
    if args.steps:
        flags += f" --steps {' '.join(map(str, args.steps))}"
    command = f"python benchmarks/bench_cost.py {flags}"
    text = (
        f"# Test-time cost on {args.benchmark} ({machine}, torch {torch.__version__})\n\n"
        f"Command: `{command}`\n\n{note}\n\n{table}\n"
    )
    (args.out / f"bench_cost_{args.benchmark}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
