"""Training throughput of candidate base-model U-Nets, eager and compiled, measured in pairs.

    python benchmarks/architecture_speed.py                 # 64x64, two fields, batch 32
    python benchmarks/architecture_speed.py --rounds 5 --out benchmarks/results/architecture_speed.md

Each candidate is built once eager and once compiled (``torch.compile``, as `pirf pretrain` does
with ``compile: true``), warmed up (compilation included), then timed in interleaved rounds: in
each round every model runs ``--steps`` training steps (EDM loss, backward, Adam) on the same
random batch, one after the other, so drift of a shared machine touches all of them alike. The
table gives each model's median samples/s over the rounds and, for compiled models, the median
over rounds of the per-round ratio compiled / eager with its range.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pirf.models.backbone import UNetConfig
from pirf.models.denoiser import edm_loss
from pirf.models.factory import build_denoiser
from pirf.training.pretrain import compile_network

CANDIDATES: list[tuple[int, tuple[int, ...], int, tuple[int, ...]]] = [
    (16, (1, 2, 2, 2), 1, ()),  # the 0.37M base models shipped before
    (16, (1, 2, 4, 4), 1, (16,)),  # the new default
    (16, (1, 2, 4, 4), 2, (16,)),
    (24, (1, 2, 4, 4), 1, (16,)),
    (32, (1, 2, 2, 2), 1, (16,)),
]


def training_step(config: UNetConfig, batch: int, compiled: bool) -> tuple[Callable[[], None], int]:
    """A closure running one EDM training step of a fresh model, and the model's parameter count."""
    torch.manual_seed(0)
    model = build_denoiser("edm", config, 1.0)
    if compiled:
        compile_network(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, config.channels, config.resolution, config.resolution)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        loss = edm_loss(model, x, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="training steps per model per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="eager models only")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()
    models: dict[str, tuple[Callable[[], None], int]] = {}
    for base, mult, layers, attention in CANDIDATES:
        config = UNetConfig(
            channels=args.channels,
            resolution=args.resolution,
            base_channels=base,
            channel_mult=mult,
            layers_per_block=layers,
            attention_resolutions=attention,
        )
        label = f"base {base}, mult {list(mult)}, {layers} block(s), attention {list(attention)}"
        for compiled in (False,) if args.no_compile else (False, True):
            models[(label, compiled)] = training_step(config, args.batch, compiled)
            for _ in range(2):  # warm-up; compiles the compiled ones
                models[(label, compiled)][0]()
    rates: dict = {key: [] for key in models}
    for _ in range(args.rounds):
        for key, (step, _) in models.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates[key].append(args.steps * args.batch / (time.perf_counter() - t0))
    lines = [
        f"`python benchmarks/architecture_speed.py --rounds {args.rounds} --steps {args.steps}` on "
        f"{platform.machine()}, {torch.get_num_threads()} torch threads; "
        f"{args.resolution}x{args.resolution}, "
        f"{args.channels} fields, batch {args.batch}; medians over {args.rounds} interleaved rounds.",
        "",
        "| U-Net | parameters | eager samples/s | compiled samples/s | compiled / eager (median, range) |",
        "|---|---|---|---|---|",
    ]
    for label in dict.fromkeys(label for label, _ in models):
        eager = rates[(label, False)]
        params = models[(label, False)][1] / 1e6
        row = f"| {label} | {params:.2f}M | {statistics.median(eager):.1f} |"
        if (label, True) in rates:
            fast = rates[(label, True)]
            ratios = [f / e for f, e in zip(fast, eager, strict=True)]
            row += (
                f" {statistics.median(fast):.1f} | {statistics.median(ratios):.2f} "
                f"({min(ratios):.2f}-{max(ratios):.2f}) |"
            )
        else:
            row += " — | — |"
        lines.append(row)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
