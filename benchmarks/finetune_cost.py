"""Cost of reward fine-tuning against plain sampling: wall time per 1,000 trajectories and peak
memory, at N = 20 and N = 80 Heun steps, on the shipped Darcy base model (32x32).

    python benchmarks/finetune_cost.py        # ~15 min on 2 cores; writes benchmarks/results/finetune_cost.md

Each setting runs in its own process (peak resident memory is per process): load the model,
one warm-up iteration, then ``--iterations`` timed iterations of ``--batch`` trajectories, each
a full fine-tuning step (rollout, reward, backward, Adam step) or, for "sampling", the rollout
alone without gradients. Peak memory is the growth of the process's peak RSS over its size
after the warm-up-free set-up (model loaded, nothing run).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

SETTINGS = {  # name -> (truncation mode, K, layers, gradient checkpointing)
    "sampling (no gradients)": None,
    "PIRF K=1, high-res layers": ("fixed", 1, "high-res", False),
    "PIRF K=2, high-res layers": ("fixed", 2, "high-res", False),
    "PIRF K=4, high-res layers (the tuned Darcy window)": ("fixed", 4, "high-res", False),
    "DRaFT-K K=1, all layers": ("fixed", 1, "all", False),
    "DRaFT (full chain), all layers, checkpointed": ("full", 0, "all", True),
}
RESULTS = Path(__file__).resolve().parent / "results"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def run_one(name: str, steps: int, batch: int, iterations: int, benchmark: str) -> dict:
    from pirf.evaluation.runner import load_model, record_pde
    from pirf.finetune.config import TruncationConfig
    from pirf.finetune.loop import _trainable
    from pirf.finetune.methods import RewardBackprop, Rollout, checkpointed
    from pirf.normalization import Normalization
    from pirf.rewards import ResidualReward
    from pirf.sampling import karras_sigmas, sample_heun

    torch.set_num_threads(2)
    model, record, _ = load_model(benchmark)
    pde, r = record_pde(record), int(record["resolution"])
    norm = Normalization.from_dict(record["normalization"])
    sigmas = karras_sigmas(steps)
    noise = torch.randn(batch, len(pde.fields), r, r, generator=torch.Generator().manual_seed(0))
    setting = SETTINGS[name]
    if setting is None:

        def iteration() -> None:
            with torch.no_grad():
                sample_heun(model, noise, sigmas)
    else:
        mode, k, layers, ckpt = setting
        params = [p for _, p in _trainable(model, noise[:2], layers)]
        optimizer = torch.optim.Adam(params, lr=1e-6)
        method = RewardBackprop(TruncationConfig(mode=mode, k=k or 1), "log-mse", name)
        rollout = Rollout(
            checkpointed(model) if ckpt else model, noise, sigmas, ResidualReward(pde), norm, None
        )

        def iteration() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = method.loss(rollout)
            loss.backward()
            optimizer.step()

    base = _peak_rss_mb()
    iteration()  # warm-up
    t0 = time.perf_counter()
    for _ in range(iterations):
        iteration()
    seconds = (time.perf_counter() - t0) / iterations
    return {
        "setting": name,
        "steps": steps,
        "seconds_per_1000_trajectories": seconds / batch * 1000,
        "peak_memory_mb": _peak_rss_mb() - base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--benchmark", default="darcy")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--one", nargs=2, metavar=("SETTING", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.batch, args.iterations, args.benchmark)))
        return
    rows = []
    for steps in (20, 80):
        for name in SETTINGS:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                name,
                str(steps),
                "--batch",
                str(args.batch),
                "--iterations",
                str(args.iterations),
                "--benchmark",
                args.benchmark,
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    write(rows, args)


def write(rows: list[dict], args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "finetune_cost.json").write_text(json.dumps(rows, indent=1))
    lines = [
        f"# Fine-tuning cost ({args.benchmark}, batch {args.batch}, mean of {args.iterations} iterations, "
        "2 CPU cores)",
        "",
        "Command: `python benchmarks/finetune_cost.py`",
        "",
        "| setting | N | s / 1000 trajectories | x sampling | peak memory (MB) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        plain = next(r for r in rows if r["steps"] == row["steps"] and r["setting"].startswith("sampling"))
        ratio = row["seconds_per_1000_trajectories"] / plain["seconds_per_1000_trajectories"]
        lines.append(
            f"| {row['setting']} | {row['steps']} | {row['seconds_per_1000_trajectories']:.1f} | "
            f"{ratio:.2f} | {row['peak_memory_mb']:.0f} |"
        )
    (RESULTS / "finetune_cost.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
