"""Cost of reward fine-tuning against plain sampling: wall time per 1,000 trajectories and peak
memory, at N = 20 and N = 80 Heun steps, on the shipped Darcy base model (32x32).

    python benchmarks/finetune_cost.py   # ~8 min, 2 cores; writes benchmarks/results/finetune_cost.{json,md}
    python benchmarks/finetune_cost.py --steps 4 --batch 2 --pairs 1 --warmup 0 --out /tmp/cost   # smoke run

Time, in this one process (`pirf.evaluation.timing.paired_timing`): at each N every setting is
built with its own copy of the model (and optimizer, rollout), then ``--warmup`` untimed calls of
each, then ``--pairs`` rounds in which every setting runs one call of ``--iterations`` iterations
of ``--batch`` trajectories, back to back, in a balanced order (`round_order`, a Williams design). A
fine-tuning iteration is a full step (rollout, reward, backward, Adam step); "sampling" is the
rollout alone without gradients. "x sampling" is the median over the rounds of the ratio to the
sampling call *of the same round* (interquartile range and range beside it), so the machine's
drift over the run cancels instead of landing in the ratio.

Peak memory is per process, so each setting also runs in a child process of its own
(`paired_processes`, ``--memory-rounds`` rounds interleaved the same way): load the model, build
the setting, note the resident peak so far, run one warm-up and ``--iterations`` iterations. The
peak memory is the OS's peak for that child (``os.wait4``) minus its peak after the set-up.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pirf.evaluation.timing import Measurement, PairedTimings

SETTINGS = {  # name -> (truncation mode, K, layers, gradient checkpointing)
    "sampling (no gradients)": None,
    "PIRF K=1, high-res layers": ("fixed", 1, "high-res", False),
    "PIRF K=2, high-res layers": ("fixed", 2, "high-res", False),
    "PIRF K=4, high-res layers (the tuned Darcy window)": ("fixed", 4, "high-res", False),
    "DRaFT-K K=1, all layers": ("fixed", 1, "all", False),
    "DRaFT (full chain), all layers, checkpointed": ("full", 0, "all", True),
}
SAMPLING = "sampling (no gradients)"
RESULTS = Path(__file__).resolve().parent / "results"


def build(name: str, steps: int, batch: int, benchmark: str) -> Callable[[], None]:
    """One iteration of setting ``name`` at ``steps`` Heun steps on a fresh copy of the model."""
    import torch

    from pirf.finetune.config import TruncationConfig
    from pirf.finetune.context import select_trainable
    from pirf.finetune.methods import RewardBackprop, Rollout, checkpointed
    from pirf.models.loading import load_model
    from pirf.models.record import record_pde
    from pirf.normalization import Normalization
    from pirf.rewards import ResidualReward
    from pirf.sampling import karras_sigmas, sample_heun

    model, record, _ = load_model(benchmark)
    pde, r = record_pde(record), int(record["resolution"])
    norm = Normalization.from_dict(record["normalization"])
    sigmas = karras_sigmas(steps)
    noise = torch.randn(batch, len(pde.fields), r, r, generator=torch.Generator().manual_seed(0))
    setting = SETTINGS[name]
    if setting is None:

        def sample() -> None:
            with torch.no_grad():
                sample_heun(model, noise, sigmas)

        return sample
    mode, k, layers, ckpt = setting
    params = [p for _, p in select_trainable(model, noise[:2], layers)]
    optimizer = torch.optim.Adam(params, lr=1e-6)
    method = RewardBackprop(TruncationConfig(mode=mode, k=k or 1), "log-mse", name)
    rollout = Rollout(checkpointed(model) if ckpt else model, noise, sigmas, ResidualReward(pde), norm, None)

    def iteration() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = method.loss(rollout)
        loss.backward()
        optimizer.step()

    return iteration


def repeated(step: Callable[[], None], times: int) -> Callable[[], None]:
    def call() -> None:
        for _ in range(times):
            step()

    return call


def memory_child(name: str, steps: int, args: argparse.Namespace) -> None:
    """The child of the memory measurement: set up, note the peak so far, run, print it."""
    import torch

    torch.set_num_threads(args.threads)
    iteration = build(name, steps, args.batch, args.benchmark)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
    for _ in range(1 + args.iterations):
        iteration()
    print(json.dumps({"baseline_mb": baseline}))


def time_settings(steps: int, args: argparse.Namespace) -> PairedTimings:
    from pirf.evaluation.timing import paired_timing

    calls = {
        name: repeated(build(name, steps, args.batch, args.benchmark), args.iterations) for name in SETTINGS
    }

    def report(r: int, name: str, m: Measurement) -> None:
        print(f"N={steps} round {r + 1}/{args.pairs}: {m.seconds:7.2f} s  {name}", flush=True)

    return paired_timing(calls, SAMPLING, args.pairs, args.warmup, report=report)


def measure_memory(steps: int, args: argparse.Namespace) -> dict[str, list[float]]:
    """Per setting, its peak memory growth (MB) in each of ``--memory-rounds`` child processes."""
    from pirf.evaluation.timing import paired_processes

    def command(name: str) -> list[str]:
        flags = ["--batch", str(args.batch), "--iterations", str(args.iterations)]
        flags += ["--benchmark", args.benchmark, "--threads", str(args.threads)]
        return [sys.executable, __file__, "--one", name, str(steps), *flags]

    runs = paired_processes({name: command(name) for name in SETTINGS}, SAMPLING, args.memory_rounds)
    growth: dict[str, list[float]] = {}
    for r in runs.rounds:
        for name, m in r.items():
            baseline = json.loads(m.output.strip().splitlines()[-1])["baseline_mb"]
            growth.setdefault(name, []).append(m.peak_rss_mb - baseline)
    print(f"N={steps} peak memory (MB): " + ", ".join(f"{n}: {max(g):.0f}" for n, g in growth.items()))
    return growth


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--benchmark", default="darcy")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=1, help="iterations per timed call")
    parser.add_argument("--pairs", type=int, default=5, help="timed rounds (each runs every setting once)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each setting first")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 80], help="Heun step counts N")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-rounds", type=int, default=1, help="child processes per setting (0: skip)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for finetune_cost.{json,md}")
    parser.add_argument("--one", nargs=2, metavar=("SETTING", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        memory_child(args.one[0], int(args.one[1]), args)
        return
    import torch

    torch.set_num_threads(args.threads)
    rows, raw = [], {}
    for steps in args.steps:
        memory = measure_memory(steps, args) if args.memory_rounds > 0 else {}
        timings = time_settings(steps, args)
        raw[str(steps)] = timings.to_dict()
        per_1000 = 1000 / (args.batch * args.iterations)
        for name, s in timings.summaries().items():
            mb = sorted(memory.get(name, []))
            rows.append(
                {
                    "setting": name,
                    "steps": steps,
                    "seconds_per_1000_trajectories": s.median * per_1000,
                    "seconds_per_1000_trajectories_min": s.min * per_1000,
                    "seconds_per_1000_trajectories_max": s.max * per_1000,
                    "cpu_seconds_per_1000_trajectories": s.cpu_median * per_1000
                    if s.cpu_median is not None
                    else None,
                    "x_sampling": s.ratio_median,
                    "x_sampling_q1": s.ratio_q1,
                    "x_sampling_q3": s.ratio_q3,
                    "x_sampling_min": s.ratio_min,
                    "x_sampling_max": s.ratio_max,
                    "peak_memory_mb": mb[len(mb) // 2] if mb else None,
                    "peak_memory_mb_max": mb[-1] if mb else None,
                }
            )
    write(rows, raw, args)


def write(rows: list[dict], raw: dict, args: argparse.Namespace) -> None:
    from pirf.evaluation.timing import method_note

    call = f"call ({args.iterations} iteration(s) of {args.batch} trajectories)"
    note = method_note(args.pairs, args.warmup, SAMPLING, call=call)
    memory_note = (
        f"Peak memory: each setting in its own child process ({args.memory_rounds} per setting, "
        "interleaved), the OS's peak resident memory of the child (`os.wait4`) minus its peak after "
        "loading the model and building the setting; the median over the children."
        if args.memory_rounds > 0
        else "Peak memory: not measured (`--memory-rounds 0`)."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": args.benchmark,
        "batch": args.batch,
        "iterations_per_call": args.iterations,
        "pairs": args.pairs,
        "warmup": args.warmup,
        "threads": args.threads,
        "memory_rounds": args.memory_rounds,
        "measured": f"{note} {memory_note}",
        "rows": rows,
        "rounds": raw,
    }
    (args.out / "finetune_cost.json").write_text(json.dumps(record, indent=1))
    flags = f"--batch {args.batch} --iterations {args.iterations} --pairs {args.pairs} --warmup {args.warmup}"
    lines = [
        f"# Fine-tuning cost ({args.benchmark}, batch {args.batch}, {args.threads} CPU threads)",
        "",
        f"Command: `python benchmarks/finetune_cost.py {flags}`",
        "",
        note,
        "",
        memory_note,
        "",
        "| setting | N | s / 1000 trajectories, median (min-max) | x sampling, median (IQR) | "
        "x sampling, range | peak memory (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        memory = f"{row['peak_memory_mb']:.0f}" if row["peak_memory_mb"] is not None else "-"
        low, high = row["seconds_per_1000_trajectories_min"], row["seconds_per_1000_trajectories_max"]
        lines.append(
            f"| {row['setting']} | {row['steps']} | {row['seconds_per_1000_trajectories']:.1f} "
            f"({low:.1f}-{high:.1f}) | "
            f"{row['x_sampling']:.2f} ({row['x_sampling_q1']:.2f}-{row['x_sampling_q3']:.2f}) | "
            f"{row['x_sampling_min']:.2f}-{row['x_sampling_max']:.2f} | {memory} |"
        )
    (args.out / "finetune_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
