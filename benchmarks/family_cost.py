"""Seconds per fine-tuning iteration of every row of a family bench (`pirf bench --family rsm`),
timed alone, so that the comparison's compute axis does not depend on what else shared the machine
while the bench ran.

    python benchmarks/family_cost.py runs/bench/cpu-family40 --benchmark darcy --threads 1

For each finished family row of OUT (its stored ``models/<benchmark>/<row>/config.json``), this
runs the same fine-tuning config in its own process for 1 warm-up iteration and ``--iterations``
timed ones (full iterations of the loop: rollout, reward, every optimizer step of the method, EMA;
no evaluation), and writes OUT/family_cost_<benchmark>.json: {row: seconds per iteration}.
`pirf.bench.figures.plot_family` then puts the training-seconds axis at iteration x that cost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def time_row(config_path: Path, iterations: int, threads: int) -> float:
    """Seconds per iteration of the fine-tune stored at ``config_path`` (mean of ``iterations``
    after one warm-up), read from the loop's own clock in metrics.jsonl."""
    import torch

    from pirf.config import load_config
    from pirf.files import read_jsonl
    from pirf.finetune import finetune
    from pirf.finetune.config import FinetuneConfig

    torch.set_num_threads(threads)
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
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(time_row(args.one, args.iterations, args.threads)))
        return
    from pirf.bench.config import FAMILY

    costs = {}
    for row in ("pirf", *FAMILY):
        config = args.out / "models" / args.benchmark / row / "config.json"
        if not config.exists():
            continue
        cmd = [sys.executable, __file__, str(args.out), "--one", str(config)]
        cmd += ["--iterations", str(args.iterations), "--threads", str(args.threads)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        costs[row] = json.loads(result.strip().splitlines()[-1])
        print(f"{row}: {costs[row]:.2f} s / iteration", flush=True)
    record = {"threads": args.threads, "iterations": args.iterations, "seconds_per_iteration": costs}
    (args.out / f"family_cost_{args.benchmark}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
