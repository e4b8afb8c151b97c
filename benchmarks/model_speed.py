"""Speed of the default (CPU) base models: pretraining steps/s and sampling samples/s at 20 Heun
steps, for each benchmark's shipped pretraining config, on this machine.

    python benchmarks/model_speed.py          # ~3 min on 2 cores; writes benchmarks/results/model_speed.md

Pretraining: a model built from the config, batches of the config's size drawn at random (the
data loader is not timed), EDM loss + backward + Adam step; mean over --steps after 2 warm-up
steps. Sampling: --n samples, 20 Heun steps (39 network calls), batches of 64, no gradients.
Run it on an otherwise idle machine: the numbers are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from pirf import pdes
from pirf.config import from_dict, resolve_config
from pirf.models.denoiser import edm_loss
from pirf.models.factory import build_denoiser
from pirf.sampling import karras_sigmas, sample_heun
from pirf.training.pretrain import PERIODIC_AXES, PretrainConfig, _unet_config

RESULTS = Path(__file__).resolve().parent / "results"


def measure(name: str, steps: int, n: int) -> dict:
    cfg = from_dict(PretrainConfig, yaml.safe_load(resolve_config("pretrain", name).read_text()))
    pde = pdes.get(name)
    res, channels = pde.default_resolution, len(pde.fields)
    assert pde.boundary in PERIODIC_AXES
    model = build_denoiser(cfg.model.kind, _unet_config(cfg.model, channels, res, pde.boundary), 1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.batch_size, channels, res, res, generator=generator)

    def train_step() -> None:
        loss = edm_loss(model, x, generator, cfg.p_mean, cfg.p_std)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        train_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    train = (time.perf_counter() - t0) / steps
    model.eval()
    noise = torch.randn(min(n, 64), channels, res, res, generator=generator)
    with torch.no_grad():
        sample_heun(model, noise[:2], karras_sigmas(3))  # warm-up
        t0 = time.perf_counter()
        for start in range(0, n, 64):
            sample_heun(model, noise[: min(64, n - start)], karras_sigmas(20))
    sampling = (time.perf_counter() - t0) / n
    params = sum(p.numel() for p in model.parameters())
    return {
        "benchmark": name,
        "resolution": res,
        "parameters": params,
        "batch_size": cfg.batch_size,
        "pretrain_steps_per_s": 1 / train,
        "pretrain_samples_per_s": cfg.batch_size / train,
        "sampling_samples_per_s_20_heun": 1 / sampling,
    }


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args()
    rows = [measure(name, args.steps, args.n) for name in pdes.names()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "model_speed.json").write_text(json.dumps(rows, indent=1))
    lines = [
        f"# Base-model speed on {torch.get_num_threads()} CPU threads (`python benchmarks/model_speed.py`)",
        "",
        "| benchmark | resolution | parameters | batch | pretrain steps/s | pretrain samples/s | "
        "sampling samples/s (20 Heun steps) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['benchmark']} | {r['resolution']} | {r['parameters'] / 1e6:.2f}M | {r['batch_size']} | "
            f"{r['pretrain_steps_per_s']:.2f} | {r['pretrain_samples_per_s']:.1f} | "
            f"{r['sampling_samples_per_s_20_heun']:.2f} |"
        )
    (RESULTS / "model_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
