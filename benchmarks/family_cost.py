"""Seconds per fine-tuning iteration of every row of a family bench (`pirf bench --family rsm`),
re-timed paired, so that the comparison's compute axis does not depend on what else shared the
machine while the bench ran.

    python benchmarks/family_cost.py runs/bench/cpu-family40 --benchmark darcy --threads 1

For each finished family row of OUT (its stored ``models/<benchmark>/<row>/config.json``), a call
runs the same fine-tuning config in this process for ``--iterations`` + 1 iterations (full
iterations of the loop: rollout, reward, every optimizer step of the method, EMA; no evaluation)
and returns the seconds per iteration after the first, read from the loop's own clock in
metrics.jsonl (the set-up and the final model selection are not counted). The rows are timed
paired (`pirf.evaluation.timing.paired_timing`): ``--warmup`` untimed calls of each row, then
``--pairs`` rounds in which every row runs one call, back to back, in a balanced order
(`round_order`, a Williams design). Writes OUT/family_cost_<benchmark>.json (or ``--result``):
{"seconds_per_iteration": {row: median over the rounds}, ...} with the range and "x_pirf", the
median over the rounds of the ratio to pirf's call *of the same round* (interquartile range and range).
`pirf.bench.figures.plot_family` then puts the training-seconds axis at iteration x that cost.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

REFERENCE = "pirf"


def time_row(config_path: Path, iterations: int) -> float:
    """Seconds per iteration of the fine-tune stored at ``config_path`` (mean of ``iterations``
    after the run's first), read from the loop's own clock in metrics.jsonl."""
    from pirf.config import load_config
    from pirf.files import read_jsonl
    from pirf.finetune import finetune
    from pirf.finetune.config import FinetuneConfig

    stored = json.loads(config_path.read_text())
    with tempfile.TemporaryDirectory() as scratch:
        overrides = [
            f"iterations={iterations + 1}",
            "log_every=1",
            f"eval.every={10**9}",
            "eval.n=2",
            f"checkpoint_every={10**9}",
            f"out={scratch}/run",
        ]
        cfg = load_config(FinetuneConfig, None, overrides, base=stored)
        finetune(cfg, progress=False)
        clock = {m["iteration"]: m["seconds"] for m in read_jsonl(Path(scratch) / "run" / "metrics.jsonl")}
    return (clock[iterations + 1] - clock[1]) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="a family bench's folder")
    parser.add_argument("--benchmark", default="darcy")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3, help="timed rounds (each runs every row once)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="untimed calls of each row first (each call drops its first iteration)",
    )
    parser.add_argument("--rows", nargs="*", help="only these rows (default: every finished one)")
    parser.add_argument(
        "--result", type=Path, help="where to write (default OUT/family_cost_<benchmark>.json)"
    )
    args = parser.parse_args()
    import torch

    from pirf.bench.config import FAMILY
    from pirf.evaluation.timing import Measurement, method_note, paired_timing

    torch.set_num_threads(args.threads)
    calls: dict[str, Callable[[], float]] = {}
    for row in ("pirf", *FAMILY):
        config = args.out / "models" / args.benchmark / row / "config.json"
        if config.exists() and (not args.rows or row in args.rows):
            calls[row] = lambda config=config: time_row(config, args.iterations)
    if not calls:
        raise SystemExit(f"no finished family row under {args.out / 'models' / args.benchmark}")
    reference = REFERENCE if REFERENCE in calls else next(iter(calls))

    def report(r: int, name: str, m: Measurement) -> None:
        print(f"round {r + 1}/{args.pairs}: {m.seconds:.2f} s / iteration  {name}", flush=True)

    timings = paired_timing(calls, reference, args.pairs, args.warmup, report=report)
    summaries = timings.summaries()
    call = f"call (a fine-tuning run of {args.iterations} + 1 iterations, the first dropped)"
    record = {
        "threads": args.threads,
        "iterations": args.iterations,
        "pairs": args.pairs,
        "warmup": args.warmup,
        "measured": method_note(args.pairs, args.warmup, reference, call=call),
        "seconds_per_iteration": {row: s.median for row, s in summaries.items()},
        "seconds_per_iteration_range": {row: [s.min, s.max] for row, s in summaries.items()},
        f"x_{reference}": {
            row: {
                "median": s.ratio_median,
                "q1": s.ratio_q1,
                "q3": s.ratio_q3,
                "min": s.ratio_min,
                "max": s.ratio_max,
            }
            for row, s in summaries.items()
        },
        "rounds": timings.to_dict(),
    }
    for row, s in summaries.items():
        print(
            f"{row}: {s.median:.2f} s / iteration ({s.min:.2f}-{s.max:.2f}), x {reference} {s.ratio_text()}"
        )
    path = args.result or args.out / f"family_cost_{args.benchmark}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
