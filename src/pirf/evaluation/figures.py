"""Figures of ``pirf sample`` and ``pirf evaluate``, drawn on `matplotlib.figure.Figure` directly
(no pyplot, no display, the Agg renderer for PNG) and saved atomically (`save_figure`).

Figures (a few samples, ``n_show``, the first ones: sample i depends only on (seed, i), so the
same columns at two step counts come from the same noise):

- ``samples.png``: one row per (set, channel), one column per sample; colour range per channel
  shared by all sets;
- ``residuals.png``: |PDE residual| per interior pixel of those samples on one linear scale
  clipped at the 99th percentile, each panel with its MSE, the data as a row beside the models;
- ``spectra.png``: radially averaged power spectrum per channel (`power_spectrum`), samples at
  each step count against the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from pirf import pdes
from pirf.evaluation.distances import power_spectrum
from pirf.evaluation.fields import finite_rows
from pirf.files import atomic_write

N_SHOW = 4
Block = tuple[str, np.ndarray]  # (label, physical fields [N, C, R, R])


def save_figure(fig: Figure, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, written atomically."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def _finite(x: np.ndarray) -> np.ndarray:
    keep = finite_rows(x)
    return x if keep.all() else x[keep]


def plot_samples(
    pde: pdes.PDE, blocks: Sequence[Block], n_show: int = N_SHOW, *, title: str = "", note: str = ""
) -> Figure:
    """A grid of the first ``n_show`` fields of each block: rows (block, channel), columns samples,
    one colour range per channel shared by all blocks (a discrete channel such as Darcy's ``a``
    spans its own values, not 0). ``title`` names what is shown (benchmark, model, steps);
    ``note`` under it says where the columns come from (seeds)."""
    cols = max(1, min(n_show, max(len(x) for _, x in blocks)))
    rows = [(label, c, x) for label, x in blocks for c in range(x.shape[1])]
    fig = Figure(figsize=(1.9 * cols + 1.2, 1.8 * len(rows) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), cols, squeeze=False))
    limits = []
    for c in range(len(pde.fields)):
        values = np.concatenate([x[:cols, c][np.isfinite(x[:cols, c])] for _, x in blocks] + [np.zeros(0)])
        limits.append((float(values.min()), float(values.max())) if values.size else (0.0, 1.0))
    for r, (label, c, x) in enumerate(rows):
        image = None
        for k in range(cols):
            ax = axes[r, k]
            ax.set_xticks([])
            ax.set_yticks([])
            if k < len(x):
                image = ax.imshow(
                    x[k, c], origin="lower", cmap="viridis", vmin=limits[c][0], vmax=limits[c][1]
                )
            if r == 0:
                ax.set_title(f"sample {k}", fontsize=9)
        axes[r, 0].set_ylabel(f"{label}\n{pde.fields[c]}", fontsize=9)
        if image is not None:
            fig.colorbar(image, ax=axes[r, :].tolist(), shrink=0.85)
    _heading(fig, title or f"{pde.name}: samples", note)
    return fig


def _heading(fig: Figure, title: str, note: str) -> None:
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=10)


def residual_maps(pde: pdes.PDE, x: np.ndarray) -> np.ndarray:
    """|residual| ``[N, H, W]`` in physical units after `PDE.project`, as the reward and the
    statistics see it (NaN for non-finite samples)."""
    out = np.full((len(x), x.shape[2], x.shape[3]), np.nan)
    ok = np.isfinite(x).all(axis=(1, 2, 3))
    if ok.any():
        with torch.no_grad():
            r = pde.residual(pde.project(torch.from_numpy(np.asarray(x[ok], dtype=np.float64))))
        out[ok] = r.abs().numpy()
    return out


def plot_residuals(
    pde: pdes.PDE, blocks: Sequence[Block], n_show: int = N_SHOW, *, title: str = "", note: str = ""
) -> Figure:
    """|PDE residual| maps of the first ``n_show`` fields of each block (one row per block; pass
    the data as a block to show the floor beside the models), off the boundary ring, each panel
    titled with its MSE there. One linear colour scale for every panel, clipped at the 99th
    percentile of the values shown: the boundary residual (in field units) and a few hot pixels
    would otherwise wash out the equation's pixels, where the physics is."""
    cols = max(1, min(n_show, max(len(x) for _, x in blocks)))
    maps = [(label, x[:cols], residual_maps(pde, x[:cols])) for label, x in blocks]
    interior = [_interior(pde, x, m) for _, x, m in maps]
    values = np.concatenate([v[np.isfinite(v)] for v in interior] + [np.zeros(1)])
    top = max(float(np.percentile(values, 99)), 1e-30)
    fig = Figure(figsize=(2.1 * cols + 1.2, 1.95 * len(maps) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(maps), cols, squeeze=False))
    image = None
    for r, ((label, _, m), inner) in enumerate(zip(maps, interior, strict=True)):
        for k in range(cols):
            ax = axes[r, k]
            ax.set_xticks([])
            ax.set_yticks([])
            if k < len(m):
                image = ax.imshow(
                    np.minimum(np.nan_to_num(inner[k], nan=0.0), top),
                    origin="lower",
                    cmap="magma",
                    vmin=0.0,
                    vmax=top,
                )
                mse = float(np.nanmean(inner[k] ** 2)) if np.isfinite(inner[k]).any() else float("nan")
                ax.set_title(f"sample {k}: MSE {mse:.2e}", fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=9)
    if image is not None:
        fig.colorbar(
            image, ax=axes.ravel().tolist(), shrink=0.85, label="|residual| off the boundary (clipped)"
        )
    _heading(fig, title or f"{pde.name}: |PDE residual|", note)
    return fig


def _interior(pde: pdes.PDE, x: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """``maps`` with the ``boundary`` region (the ring, or Burgers' time edges) set to NaN; the
    equation's own pixels (Darcy's interface included) are kept."""
    if len(x) == 0 or not np.isfinite(x).all():
        return maps
    with torch.no_grad():
        regions = pde.regions(torch.from_numpy(np.asarray(x, dtype=np.float64)))
    edge = regions.get("boundary")
    return maps if edge is None else np.where(edge.numpy(), np.nan, maps)


def plot_spectra(pde: pdes.PDE, blocks: Sequence[Block]) -> Figure:
    """Radially averaged power spectra P(k), k >= 1, one panel per channel, one line per block."""
    fig = Figure(figsize=(3.6 * len(pde.fields), 3.2), layout="constrained")
    axes = fig.subplots(1, len(pde.fields), squeeze=False)[0]
    for label, x in blocks:
        finite = _finite(x)
        if len(finite) == 0:
            continue
        spectrum = power_spectrum(finite)
        k = np.arange(1, spectrum.shape[1])
        for c, ax in enumerate(axes):
            style = {"color": "black", "linewidth": 2.0} if label == "reference" else {"linewidth": 1.2}
            ax.loglog(k, np.maximum(spectrum[c, 1:], 1e-300), label=label, **style)
    for c, ax in enumerate(axes):
        ax.set_title(pde.fields[c], fontsize=10)
        ax.set_xlabel("wavenumber k (cycles per domain)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("power P(k)")
    axes[0].legend(fontsize=8)
    return fig


__all__ = [
    "N_SHOW",
    "Block",
    "plot_residuals",
    "plot_samples",
    "plot_spectra",
    "residual_maps",
    "save_figure",
]
