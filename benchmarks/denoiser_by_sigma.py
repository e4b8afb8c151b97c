"""How well a base model denoises at each noise level, channel by channel, on held-out data.

    python benchmarks/denoiser_by_sigma.py poisson runs/pretrain/poisson

For each model (a zoo name, a run folder or a checkpoint) and each sigma of a fixed ladder from
0.01 to 400 (80 is EDM's top: above it only a model trained wider has seen), ``--n`` held-out
fields x (seed = training seed + 10000, pirf's cached reference) are noised once, x + sigma n,
and denoised; per channel it reports

- the relative error ||D(x + sigma n, sigma) - x||^2 / ||x||^2 (normalized units; 1 is what
  predicting zero scores, so a value above 1 is worse than no prediction), and
- the low-wavenumber power ratio: the power of D's output over that of x in the modes
  |k_x|, |k_y| <= 2, where a smooth field such as Poisson's u holds almost all of its variance;

and, per channel, the largest variance of one Fourier mode of the held-out fields (orthonormal
FFT, normalized units): a chain must start at a sigma_max well above its square root, or it starts
with too little variance in that mode.

This is the diagnostic behind docs/models.md's choice of training noise levels: where the error
is far above what a better-trained model reaches at the same sigma, the training distribution of
sigma (EDM: ln sigma ~ N(-1.2, 1.2^2)) visits that level too rarely. Writes
``benchmarks/results/denoiser_by_sigma.json`` (one entry per model, replaced when rescored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from pirf.data import read_fields
from pirf.evaluation.reference import held_out_reference
from pirf.models.loading import load_model

RESULT = Path(__file__).resolve().parent / "results" / "denoiser_by_sigma.json"
SIGMAS = (0.01, 0.05, 0.2, 1.0, 3.0, 10.0, 30.0, 80.0, 200.0, 400.0)
LOW_MODES = 3  # |k| <= 2 in each direction (rfft2 keeps k_y >= 0; k_x < 0 modes are the mirror)


def low_mode_power(x: torch.Tensor) -> torch.Tensor:
    """Per channel, the summed power of the modes |k_x| <= 2, 0 <= k_y <= 2 of ``x [N, C, H, W]``."""
    spectrum = torch.fft.rfft2(x)
    rows = torch.cat([spectrum[:, :, :LOW_MODES], spectrum[:, :, -(LOW_MODES - 1) :]], dim=2)
    return (rows[..., :LOW_MODES].abs() ** 2).sum(dim=(0, 2, 3))


def score(spec: str, n: int, seed: int) -> dict[str, Any]:
    loaded = load_model(spec)
    model = loaded.module
    fields = read_fields(held_out_reference(loaded.pde, loaded.resolution, loaded.data_seed + 10000, 256))
    x = torch.as_tensor(loaded.normalization.normalize(fields[:n]), dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for sigma in SIGMAS:
        noise = torch.randn(x.shape, generator=generator)
        with torch.no_grad():
            denoised = torch.cat(
                [model(b, torch.full((b.shape[0],), sigma)) for b in (x + sigma * noise).split(32)]
            )
        error = ((denoised - x) ** 2).mean(dim=(0, 2, 3)) / (x**2).mean(dim=(0, 2, 3))
        power = low_mode_power(denoised) / low_mode_power(x)
        rows.append(
            {"sigma": sigma, "relative_error": error.tolist(), "low_mode_power_ratio": power.tolist()}
        )
    channels = list(loaded.pde.fields)
    modes = (torch.fft.fft2(x, norm="ortho").abs() ** 2).mean(dim=0).flatten(1).amax(dim=1)
    return {
        "model": spec,
        "path": str(loaded.path),
        "sigma_max": getattr(model, "sigma_max", 80.0),
        "channels": channels,
        "largest_mode_variance": modes.tolist(),
        "n": n,
        "rows": rows,
    }


def table(entry: dict[str, Any]) -> str:
    names = entry["channels"]
    head = " | ".join([*(f"rel. error {c}" for c in names), *(f"low-k power {c}" for c in names)])
    modes = ", ".join(f"{c} {v:.0f}" for c, v in zip(names, entry["largest_mode_variance"], strict=True))
    title = f"{entry['model']} (sigma_max {entry['sigma_max']:g}; largest Fourier-mode variance: {modes})"
    lines = [title, f"| sigma | {head} |", "|---" * (1 + 2 * len(names)) + "|"]
    for row in entry["rows"]:
        values = [*row["relative_error"], *row["low_mode_power_ratio"]]
        lines.append(f"| {row['sigma']:g} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="zoo names, run folders or checkpoints")
    parser.add_argument("--n", type=int, default=64, help="held-out fields per noise level")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))
    old = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    entries = {e["model"]: e for e in old["rows"]}
    for spec in args.models:
        entry = score(spec, args.n, args.seed)
        entries[spec] = entry
        print(table(entry), end="\n\n")
    command = "python benchmarks/denoiser_by_sigma.py " + " ".join(args.models)
    meta = {"command": command, "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": list(entries.values())}, indent=1) + "\n")


if __name__ == "__main__":
    main()
