"""Where a model's residual comes from: the coarse or the fine scales of its error against the
nearest field with (almost) no residual.

    python benchmarks/residual_origin.py [MODEL] [--n 32]   # darcy (default), poisson, kolmogorov, a file

Samples MODEL (20 Heun steps) and builds, for every sample, a reference that satisfies the
equation and shares the part of the sample the equation takes as given:

- Darcy: the permeability projected onto its two phases, and u* from the exact solve of the
  discrete problem (``Darcy.solve``: the same 5-point conservative operator the residual uses,
  so u* has zero residual);
- Poisson and Helmholtz: the source f, and u* from the exact solve of the 5-point problem the
  residual uses (Laplacian_h u + k^2 u = f, u = 0 on the boundary; a type-I sine transform
  diagonalizes it), so u* has zero residual;
- Kolmogorov: the first frame w0, and frames 1 and 2 from the solver run forward from it
  (``Kolmogorov.trajectory``), so the reference is the flow that w0 starts.

The error e = sample - reference is split at a radial wavenumber cut-off into e_low (|k| <= c)
and e_high (|k| > c). The residual of reference + e_low and of reference + e_high says which part
of the error makes the residual; the RMS of each part is in the model's normalized units, where
the sampler's noise levels sigma live, so it says which steps of the chain make that error.

What it showed (benchmarks/results/residual_origin.md, docs/finetune.md): the Darcy base's error
is mostly coarse (RMS ~0.08) but harmless; its residual comes from the fine scales (|k| > 8),
whose RMS (~0.01) is of the order of the chain's last noise levels, which a gradient window of
the last 4 steps reaches. The Kolmogorov base's residual comes from frames 1 and 2 disagreeing
with the flow w0 starts at wavenumbers 2-16, with RMS ~0.1: an error the chain makes at
sigma ~0.1-2, far above the last 4 steps' noise levels.
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.fft
import torch

from pirf.models.loading import load_model
from pirf.models.record import record_pde
from pirf.sampling.draw import generate_samples


def median_residual(pde, fields: np.ndarray) -> float:
    """Median over samples of the per-sample residual MSE of ``fields [B, C, R, R]``."""
    x = torch.as_tensor(fields, dtype=torch.float64)
    return float(pde.residual(x).pow(2).mean(dim=(1, 2)).median())


def discrete_dirichlet_solve(f: np.ndarray, k_squared: float) -> np.ndarray:
    """u ``[B, R, R]`` with Laplacian_h u + k^2 u = f on interior nodes and u = 0 on the boundary
    (5-point stencil, h = 1 / (R - 1)): the stencil's eigenvectors are the sine modes, with
    eigenvalues -(4 / h^2) (sin^2(pi j / (2 (n + 1))) + sin^2(pi l / (2 (n + 1)))), n = R - 2."""
    r = f.shape[-1]
    n, h = r - 2, 1.0 / (r - 1)
    s = np.sin(np.pi * np.arange(1, n + 1) / (2 * (n + 1))) ** 2
    symbol = -(4 / h**2) * (s[:, None] + s[None, :]) + k_squared
    interior = scipy.fft.idstn(
        scipy.fft.dstn(f[:, 1:-1, 1:-1], type=1, axes=(1, 2)) / symbol, type=1, axes=(1, 2)
    )
    u = np.zeros_like(f)
    u[:, 1:-1, 1:-1] = interior
    return u


def reference_fields(pde, fields: np.ndarray) -> np.ndarray:
    """The residual-free field nearest to each sample that keeps what the equation takes as
    given (module docstring)."""
    if pde.name == "darcy":
        projected = pde.project(torch.as_tensor(fields)).double().numpy()
        return np.stack([projected[:, 0], pde.solve(projected[:, 0])], 1)
    if pde.name in ("poisson", "helmholtz"):
        return np.stack([fields[:, 0], discrete_dirichlet_solve(fields[:, 0], pde.k_squared)], 1)
    if pde.name == "kolmogorov":
        return pde.trajectory(fields[:, 0], [0, 1, 2]).astype(np.float64)
    raise SystemExit(
        f"residual_origin: no reference field for {pde.name} (darcy, poisson, helmholtz, kolmogorov)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="darcy")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    loaded = load_model(args.model)
    pde = record_pde(loaded.record)
    samples = generate_samples(
        loaded.module, loaded.record, args.n, args.steps, seed=args.seed, progress=False
    )
    fields = samples.fields.astype(np.float64)
    reference = reference_fields(pde, fields)
    if pde.name == "darcy":  # the coefficient is the projected one on both sides
        fields = np.stack([reference[:, 0], fields[:, 1]], 1)
    error = fields - reference
    scale = np.asarray(loaded.record["normalization"]["scale"], dtype=np.float64).reshape(-1)
    changed = [c for c in range(fields.shape[1]) if np.abs(error[:, c]).max() > 0]
    r = fields.shape[-1]
    k = np.fft.fftfreq(r) * r
    radius = np.hypot(k[:, None], k[None, :])
    print(f"model {args.model}: {args.n} samples, {args.steps} Heun steps")
    sample_residual, reference_residual = median_residual(pde, fields), median_residual(pde, reference)
    print(f"residual: sample {sample_residual:.3g}, reference {reference_residual:.2g}")
    for c in changed:
        rms = np.sqrt((error[:, c] ** 2).mean()) / scale[c]
        print(f"error RMS of channel {c} (normalized units): {rms:.4f}")
    print("| cut-off c | residual, ref + e_low | residual, ref + e_high | RMS e_low | RMS e_high |")
    print("|---|---|---|---|---|")
    spectrum = np.fft.fft2(error)
    normalized = scale[changed].mean()
    for cut in [c for c in (2, 4, 8, 12, 16, 24, 32) if c <= r // 2]:
        low = np.real(np.fft.ifft2(spectrum * (radius <= cut)))
        high = error - low
        rms_low = np.sqrt((low[:, changed] ** 2).mean()) / normalized
        rms_high = np.sqrt((high[:, changed] ** 2).mean()) / normalized
        print(
            f"| {cut} | {median_residual(pde, reference + low):.3g} "
            f"| {median_residual(pde, reference + high):.3g} | {rms_low:.4f} | {rms_high:.4f} |"
        )


if __name__ == "__main__":
    main()
