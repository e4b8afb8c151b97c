"""Speed of the default (CPU) base models: pretraining steps/s and sampling samples/s at 20 Heun
steps, for each benchmark's shipped pretraining config, on this machine.

    python benchmarks/model_speed.py   # ~8 min on 2 cores; writes benchmarks/results/model_speed.{json,md}
    python benchmarks/model_speed.py --benchmarks darcy poisson --steps 1 --n 2 --pairs 1 --out /tmp/ms

Pretraining: a model built from the config, batches of the config's size drawn at random (the
data loader is not timed), EDM loss + backward + Adam step; a call is ``--steps`` steps.
Sampling: a call draws ``--n`` samples, 20 Heun steps (39 network calls), batches of 64, no
gradients. Every benchmark's model is built in this one process and the 2 x (benchmarks) settings
are timed paired (`pirf.evaluation.timing.paired_timing`): ``--warmup`` untimed calls of each,
then ``--pairs`` rounds in which every setting runs one call, back to back, in a balanced
order (`round_order`, a Williams design). Speeds are from the median call (with the slowest and
fastest call beside them); "x <reference>" is the median over the rounds of the per-round ratio
of a benchmark's cost (per step, per sample) to the reference benchmark's in the same round,
which holds when the machine's speed drifts (the absolute speeds do not: run on an otherwise idle machine).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from pirf import pdes
from pirf.config import from_dict, packaged_configs, resolve_config
from pirf.evaluation.timing import Measurement, PairedTimings, method_note, paired_timing
from pirf.models.denoiser import edm_loss
from pirf.models.factory import build_denoiser
from pirf.sampling import karras_sigmas, sample_heun
from pirf.training.config import PretrainConfig
from pirf.training.pretrain import PERIODIC_AXES, unet_config

RESULTS = Path(__file__).resolve().parent / "results"
TRAIN, SAMPLE = "pretraining", "sampling"


def build(name: str, steps: int, n: int) -> tuple[dict[str, Any], Callable[[], None], Callable[[], None]]:
    """(facts, a call of ``steps`` pretraining steps, a call drawing ``n`` samples) of ``name``."""
    cfg = from_dict(PretrainConfig, yaml.safe_load(resolve_config("pretrain", name).read_text()))
    pde = pdes.get(name)
    res, channels = pde.default_resolution, len(pde.fields)
    assert pde.boundary in PERIODIC_AXES
    conditioning = pde.conditioning(res) if cfg.model.conditioning else ()  # as `pretrain` builds it
    unet = unet_config(cfg.model, channels, res, pde.boundary, cfg.physics_guide)
    model = build_denoiser(cfg.model.kind, unet, cfg.model.sigma_data, conditioning)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.batch_size, channels, res, res, generator=generator)
    noise = torch.randn(min(n, 64), channels, res, res, generator=generator)
    sigmas = karras_sigmas(20)

    def train() -> None:
        model.train()
        for _ in range(steps):
            loss = edm_loss(model, x, generator, cfg.noise_levels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def sample() -> None:
        model.eval()
        with torch.no_grad():
            for start in range(0, n, 64):
                sample_heun(model, noise[: min(64, n - start)], sigmas)

    facts = {
        "benchmark": name,
        "resolution": res,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch_size": cfg.batch_size,
    }
    return facts, train, sample


def rows_of(timings: PairedTimings, facts: dict[str, dict], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name, f in facts.items():
        train = timings.summary(f"{name} {TRAIN}", f"{args.reference} {TRAIN}")
        sample = timings.summary(f"{name} {SAMPLE}", f"{args.reference} {SAMPLE}")
        step, per_sample = train.median / args.steps, sample.median / args.n
        rows.append(
            f
            | {
                "pretrain_steps_per_s": 1 / step,
                "pretrain_steps_per_s_range": [args.steps / train.max, args.steps / train.min],
                "pretrain_samples_per_s": f["batch_size"] / step,
                "sampling_samples_per_s_20_heun": 1 / per_sample,
                "sampling_samples_per_s_range": [args.n / sample.max, args.n / sample.min],
                f"pretrain_step_cost_x_{args.reference}": _ratios(train),
                f"sample_cost_x_{args.reference}": _ratios(sample),
            }
        )
    return rows


def _ratios(s: Any) -> dict[str, float]:
    return {
        "median": s.ratio_median,
        "q1": s.ratio_q1,
        "q3": s.ratio_q3,
        "min": s.ratio_min,
        "max": s.ratio_max,
    }


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    shipped = [n for n in pdes.names() if n in packaged_configs("pretrain")]
    parser.add_argument("--steps", type=int, default=10, help="pretraining steps per timed call")
    parser.add_argument("--n", type=int, default=64, help="samples per timed sampling call")
    parser.add_argument("--pairs", type=int, default=3, help="timed rounds (each runs every setting once)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each setting first")
    parser.add_argument("--benchmarks", nargs="+", default=shipped, choices=shipped)
    parser.add_argument("--reference", default="darcy", help="the benchmark the cost ratios divide by")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for model_speed.{json,md}")
    args = parser.parse_args()
    if args.reference not in args.benchmarks:
        parser.error(f"--reference {args.reference} is not among --benchmarks")
    facts, calls = {}, {}
    for name in args.benchmarks:
        facts[name], calls[f"{name} {TRAIN}"], calls[f"{name} {SAMPLE}"] = build(name, args.steps, args.n)

    def report(r: int, name: str, m: Measurement) -> None:
        print(f"round {r + 1}/{args.pairs}: {m.seconds:7.2f} s  {name}", flush=True)

    timings = paired_timing(calls, f"{args.reference} {TRAIN}", args.pairs, args.warmup, report=report)
    rows = rows_of(timings, facts, args)
    call = f"call ({args.steps} pretraining steps, or {args.n} samples at 20 Heun steps)"
    against = f"the call of the same kind (pretraining or sampling) of `{args.reference}`"
    note = method_note(args.pairs, args.warmup, args.reference, call=call, against=against)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "threads": torch.get_num_threads(),
        "steps_per_call": args.steps,
        "samples_per_call": args.n,
        "pairs": args.pairs,
        "warmup": args.warmup,
        "measured": note,
        "rows": rows,
        "rounds": timings.to_dict(),
    }
    (args.out / "model_speed.json").write_text(json.dumps(record, indent=1))
    ref = args.reference
    flags = f"--steps {args.steps} --n {args.n} --pairs {args.pairs} --warmup {args.warmup}"
    lines = [
        f"# Base-model speed on {torch.get_num_threads()} CPU threads",
        "",
        f"Command: `python benchmarks/model_speed.py {flags}`",
        "",
        note,
        "",
        "| benchmark | resolution | parameters | batch | pretrain steps/s (range) | pretrain samples/s | "
        f"step cost x {ref}, median (IQR) | sampling samples/s (20 Heun steps) (range) | "
        f"sample cost x {ref}, median (IQR) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, s = r[f"pretrain_step_cost_x_{ref}"], r[f"sample_cost_x_{ref}"]
        (t_lo, t_hi), (s_lo, s_hi) = r["pretrain_steps_per_s_range"], r["sampling_samples_per_s_range"]
        lines.append(
            f"| {r['benchmark']} | {r['resolution']} | {r['parameters'] / 1e6:.2f}M | {r['batch_size']} | "
            f"{r['pretrain_steps_per_s']:.2f} ({t_lo:.2f}-{t_hi:.2f}) | {r['pretrain_samples_per_s']:.1f} | "
            f"{t['median']:.2f} ({t['q1']:.2f}-{t['q3']:.2f}) | "
            f"{r['sampling_samples_per_s_20_heun']:.2f} ({s_lo:.2f}-{s_hi:.2f}) | "
            f"{s['median']:.2f} ({s['q1']:.2f}-{s['q3']:.2f}) |"
        )
    (args.out / "model_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
