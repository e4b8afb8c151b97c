"""The numbers behind the parameter choices in docs/pdes.md: floors against parameters and
against perturbations, at the CPU default resolutions.

    python benchmarks/physics_checks.py      # ~3 min on 2 cores; writes benchmarks/results/physics_checks.md

1. Floor sensitivity: Burgers' interior floor against nu at 64; Kolmogorov's floor / Var w
   against Re at 64, with the share of enstrophy beyond the 2/3 cutoff; Darcy's floor for the
   "cells" and "continuous" coefficient models.
2. Floor against perturbations: median over samples of (residual MSE of perturbed data) /
   (residual MSE of the data), interior region, for 1% noise (1% of the channel's std) that is
   white, or smoothed over 2 or 4 pixels (Gaussian filter), added to the solution channel(s).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch

import pirf.pdes as pdes

RESULTS = Path(__file__).resolve().parent / "results"
SOLUTION_CHANNELS = {"darcy": [1], "poisson": [1], "helmholtz": [1], "burgers": [0], "kolmogorov": [0, 1, 2]}


def interior_mse(pde: pdes.PDE, x: np.ndarray) -> torch.Tensor:
    return pde.residual_stats(torch.from_numpy(np.asarray(x, np.float64)))["interior"]["mse"]


def noise_ratio(pde: pdes.PDE, x: np.ndarray, channels: list[int], smooth: float) -> float:
    rng = np.random.default_rng(0)
    noisy = x.astype(np.float64).copy()
    wrap = "wrap" if pde.boundary == "periodic" else "nearest"
    for c in channels:
        noise = rng.standard_normal(x[:, c].shape)
        if smooth > 0:
            noise = scipy.ndimage.gaussian_filter(noise, sigma=(0, smooth, smooth), mode=wrap)
        noisy[:, c] += 0.01 * x[:, c].std() * noise / noise.std()
    if pde.boundary == "dirichlet":  # keep the boundary condition exact: score the interior only
        noisy[:, :, [0, -1], :] = x[:, :, [0, -1], :]
        noisy[:, :, :, [0, -1]] = x[:, :, :, [0, -1]]
    return float((interior_mse(pde, noisy) / interior_mse(pde, x)).median())


def enstrophy_beyond_cutoff(x: np.ndarray) -> float:
    """Share of |w_hat|^2 at |k| >= R/3 (the 2/3 dealiasing cutoff) in the middle frame."""
    w_hat = np.fft.fft2(x[:, 1])
    k = np.fft.fftfreq(x.shape[-1], 1 / x.shape[-1])
    kk = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    power = (np.abs(w_hat) ** 2).mean(axis=0)
    return float(power[kk >= x.shape[-1] / 3].sum() / power.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=64, help="samples per setting")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    lines = [f"Measured with `python benchmarks/physics_checks.py --n {args.n}`.", ""]

    lines += [
        "## Burgers at 64: interior floor against nu",
        "",
        "| nu | interior MSE | / Var u |",
        "|---|---|---|",
    ]
    for nu in (0.01, 0.015, 0.02, 0.03):
        pde = pdes.get("burgers", nu=nu)
        x = pde.generate(args.n, 64, seed=0)
        floor = interior_mse(pde, x).mean().item()
        lines.append(f"| {nu} | {floor:.2e} | {floor / x.var():.1e} |")

    lines += [
        "",
        "## Kolmogorov at 64: floor against Re",
        "",
        "| Re | floor MSE | / Var w | enstrophy share beyond 2/3 cutoff |",
        "|---|---|---|---|",
    ]
    for re in (40.0, 50.0, 60.0, 100.0):
        pde = pdes.get("kolmogorov", re=re)
        x = pde.generate(args.n, 64, seed=0)
        floor = interior_mse(pde, x).mean().item()
        lines.append(f"| {re:g} | {floor:.2e} | {floor / x.var():.1e} | {enstrophy_beyond_cutoff(x):.1e} |")
    pde = pdes.get("kolmogorov", **pdes.get_class("kolmogorov").paper_params)
    x = pde.generate(pde.samples_per_group, 128, seed=0)
    floor = interior_mse(pde, x).mean().item()
    lines += [
        "",
        f"Paper setting (Re = 1000 at 128, {len(x)} samples): floor MSE {floor:.2e}, "
        f"Var w {x.var():.2e}, ratio {floor / x.var():.1e}.",
    ]

    lines += [
        "",
        "## Darcy at 32: coefficient model",
        "",
        "| coefficient | all | interior | interface |",
        "|---|---|---|---|",
    ]
    for model, refine in (("cells", 5), ("continuous", 4)):
        pde = pdes.get("darcy", coefficient=model, refine=refine)
        s = pde.residual_stats(torch.from_numpy(pde.generate(args.n, 32, seed=0)).double())
        lines.append(
            f"| {model} | {s['all']['mse'].mean():.2e} | {s['interior']['mse'].mean():.2e} "
            f"| {s['interface']['mse'].mean():.2e} |"
        )

    lines += [
        "",
        "## Floor against 1% perturbations (median ratio, interior, CPU defaults)",
        "",
        "| PDE | R | white | smooth 2 px | smooth 4 px |",
        "|---|---|---|---|---|",
    ]
    for name in pdes.names():
        pde = pdes.get(name)
        r = pde.default_resolution
        x = pde.generate(args.n, r, seed=1)
        ratios = [noise_ratio(pde, x, SOLUTION_CHANNELS[name], s) for s in (0, 2, 4)]
        lines.append(f"| {name} | {r} | " + " | ".join(f"{v:.0f}" for v in ratios) + " |")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "physics_checks.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
