"""A flow model sampled on two grids of noise levels: its own uniform t grid and EDM's Karras grid.

    python benchmarks/flow_grids.py runs/pretrain/poisson-flow:400 runs/pretrain/poisson-flow-uniform:80

A rectified flow is sampled through the EDM call D(x, sigma) = x_t - t v(x_t, t), with
sigma = t / (1 - t), so any grid of noise levels solves the same ODE: pirf's flow grid is uniform
in t from t_max = sigma_max / (1 + sigma_max) (`pirf.sampling.schedules.flow_sigmas`), EDM's is
Karras et al.'s (rho 7), which spends more steps at the top. For each ``MODEL:SIGMA_MAX`` this
draws ``--n`` samples (seed 0) at ``--steps`` on both grids and prints, per channel, the spectrum
error (mean |log10 P_samples / P_data| over shells 1 .. R/2, `base_targets.spectrum_dex`) and the
std ratio against the model's held-out reference data (docs/models.md, "Flow bases").
Writes benchmarks/results/flow_grids.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from base_targets import spectrum_dex

from pirf.data import read_fields
from pirf.evaluation.reference import held_out_reference
from pirf.models.loading import load_model
from pirf.models.record import record_pde
from pirf.sampling.draw import generate_samples, sigma_grid
from pirf.sampling.schedules import karras_sigmas

RESULT = Path(__file__).resolve().parent / "results" / "flow_grids.json"


def score(spec: str, sigma_max: float, steps: int, n: int) -> list[dict]:
    """Spectrum error and std ratio per channel of ``spec``'s samples on both grids."""
    loaded = load_model(spec)
    pde = record_pde(loaded.record)
    seed = int(loaded.record["data"]["seed"]) + 10000
    reference = read_fields(held_out_reference(pde, loaded.resolution, seed, 256, progress=False))
    grids = {
        "uniform t": sigma_grid(loaded.module, steps, sigma_max=sigma_max),
        "karras": karras_sigmas(steps, 0.002, sigma_max, 7.0),
    }
    rows = []
    for name, sigmas in grids.items():
        fields = generate_samples(
            loaded.module, loaded.record, n, steps, 0, sigmas=sigmas, progress=False
        ).fields
        std = fields.std(axis=(0, 2, 3)) / reference.std(axis=(0, 2, 3))
        row = {"model": spec, "sigma_max": sigma_max, "grid": name, "fields": list(pde.fields)}
        rows.append(
            row | {"spectrum_dex": spectrum_dex(fields, reference).tolist(), "std_ratio": std.tolist()}
        )
        dex = np.round(rows[-1]["spectrum_dex"], 3)
        print(f"{spec} from {sigma_max:g}, {name}: spectrum dex {dex}, std ratio {np.round(std, 2)}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", help="MODEL:SIGMA_MAX")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n", type=int, default=32)
    args = parser.parse_args()
    rows = []
    for item in args.models:
        spec, _, top = item.rpartition(":")
        rows += score(spec, float(top), args.steps, args.n)
    RESULT.write_text(json.dumps({"steps": args.steps, "n": args.n, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
