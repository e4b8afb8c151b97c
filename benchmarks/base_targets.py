"""Score base models against the targets of "base models that look like the data".

    python benchmarks/base_targets.py poisson poisson-flow runs/pretrain/kolmogorov
    python benchmarks/base_targets.py runs/pretrain/poisson --curve   # a point of the training curve

For each model (a zoo name, a run folder, or a checkpoint such as RUN/checkpoints/latest) it draws
``--n`` samples (default 32) at ``--steps`` Heun steps (default 20, seed 0) and compares them with
freshly solved held-out data of the model's PDE and parameters (seed = training seed + 10000,
256 samples, cached by pirf). The targets, per model:

- spectrum: every channel's radially averaged power spectrum within 0.1 dex of the data's, the
  mean of |log10 P_samples(k) / P_data(k)| over the shells k = 1 .. R/2 (cycles per domain; the
  shells beyond R/2 hold only the corners of the square spectrum). pirf's own all-shell figure
  (`pirf.evaluation.distances.spectrum_error`, shells to the corner) is reported beside it;
- std: every channel's standard deviation (over samples and pixels) within 15% of the data's;
- fidelity: pirf's fidelity score at most 2x the data's own, where "the data's own" is the score
  of ``--n`` further held-out samples (seed + 20000) against the same reference, so both carry
  the same finite-sample floor;
- Kolmogorov: the samples' mean-vorticity profile along y (mean over samples, frames and x)
  correlates with the data's at >= 0.8 (the forcing's phase is learned);
- memorization: mean nearest-training-field distance over the training set's own (>= 0.9).

Output: a table on stdout; ``--out FILE`` (default benchmarks/results/base_targets.json) keeps
one entry per model, replaced when the model is scored again. With ``--curve`` the point (train
seconds, step, scores) is appended to RUN/target_curve.jsonl instead, to follow a training run.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pirf import pdes
from pirf.data import read_fields, read_info
from pirf.evaluation.distances import channel_moments, nearest_neighbour_distance, power_spectrum
from pirf.evaluation.metrics import fidelity_report
from pirf.evaluation.reference import held_out_reference
from pirf.models.loading import load_model
from pirf.sampling.draw import generate_samples

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "base_targets.json"
TARGETS = {"spectrum_dex": 0.1, "std_ratio_error": 0.15, "fidelity_over_data": 2.0, "profile_corr": 0.8}
NN_TARGET = 0.9


def spectrum_dex(samples: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per channel: mean over shells k = 1 .. R/2 of |log10 P_s(k) - log10 P_ref(k)| (dex)."""
    half = samples.shape[-1] // 2
    ps, pr = power_spectrum(samples)[:, 1 : half + 1], power_spectrum(reference)[:, 1 : half + 1]
    tiny = 1e-300
    return np.abs(np.log10(ps + tiny) - np.log10(pr + tiny)).mean(axis=1)


def y_profile(fields: np.ndarray) -> np.ndarray:
    """Mean over samples, channels and x (the last axis) of fields ``[N, C, H, W]``: ``[H]``."""
    return fields.mean(axis=(0, 1, 3))


def profile_correlation(samples: np.ndarray, reference: np.ndarray) -> float:
    """Pearson correlation of the two sets' mean profiles along y."""
    return float(np.corrcoef(y_profile(samples), y_profile(reference))[0, 1])


def score(spec: str, n: int, steps: int, seed: int) -> dict[str, Any]:
    """Every target quantity of one model (see the module docstring)."""
    model, record, path = load_model(spec)
    pde = pdes.get(record["pde"], **record.get("pde_params", {}))
    resolution = int(record["resolution"])
    train_seed = int(record.get("data", {}).get("seed") or 0)
    reference = read_fields(held_out_reference(pde, resolution, train_seed + 10000, 256, progress=False))
    own = read_fields(held_out_reference(pde, resolution, train_seed + 20000, n, progress=False))
    drawn = generate_samples(model, record, n, steps, seed, progress=False)
    samples = drawn.fields
    channels = list(pde.fields)
    std_s, std_r = channel_moments(samples)[1], channel_moments(reference)[1]
    fid = fidelity_report(pde, samples, reference)
    fid_data = fidelity_report(pde, own, reference)
    out: dict[str, Any] = {
        "model": str(spec),
        "path": str(path),
        "pde": pde.name,
        "kind": record["model"]["kind"],
        "step": record.get("step"),
        "train_seconds": record.get("train_seconds"),
        "n": n,
        "steps": steps,
        "spectrum_dex": dict(zip(channels, spectrum_dex(samples, reference).tolist(), strict=True)),
        "spectrum_dex_data": dict(zip(channels, spectrum_dex(own, reference).tolist(), strict=True)),
        "spectrum_dex_all_shells": {c: fid["spectrum_error"][c] for c in channels},
        "std_ratio": dict(zip(channels, (std_s / std_r).tolist(), strict=True)),
        "fidelity": fid["fidelity_score"],
        "fidelity_terms": fid["score_terms"],
        "fidelity_data": fid_data["fidelity_score"],
        "fidelity_over_data": fid["fidelity_score"] / max(fid_data["fidelity_score"], 1e-12),
        "sampling_seconds": drawn.seconds,
    }
    if pde.name == "kolmogorov":
        out["profile_corr"] = profile_correlation(samples, reference)
        out["profile_corr_data"] = profile_correlation(own, reference)
    train_path = record.get("data", {}).get("path")
    if train_path and Path(train_path).exists() and read_info(train_path).resolution == resolution:
        out["nn_ratio"] = nearest_neighbour_distance(samples, read_fields(train_path), pde=pde)["ratio"]
    out["passed"] = verdict(out)
    return out


def verdict(row: dict[str, Any]) -> dict[str, bool]:
    """Which targets a scored row meets."""
    passed = {
        "spectrum": max(row["spectrum_dex"].values()) <= TARGETS["spectrum_dex"],
        "std": max(abs(r - 1) for r in row["std_ratio"].values()) <= TARGETS["std_ratio_error"],
        "fidelity": row["fidelity_over_data"] <= TARGETS["fidelity_over_data"],
    }
    if "profile_corr" in row:
        passed["profile"] = row["profile_corr"] >= TARGETS["profile_corr"]
    if "nn_ratio" in row:
        passed["not_copies"] = row["nn_ratio"] >= NN_TARGET
    return passed


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| model | kind | step | train min | spectrum dex (worst ch.) | std ratio (worst ch.) "
        "| fidelity / data's | Kolmogorov profile corr | NN ratio | targets met |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        worst_spec = max(r["spectrum_dex"], key=r["spectrum_dex"].get)
        worst_std = max(r["std_ratio"], key=lambda c: abs(r["std_ratio"][c] - 1))
        minutes = (r.get("train_seconds") or 0) / 60
        met = sum(r["passed"].values())
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['step']} | {minutes:.0f} "
            f"| {r['spectrum_dex'][worst_spec]:.3f} ({worst_spec}) "
            f"| {r['std_ratio'][worst_std]:.2f} ({worst_std}) "
            f"| {r['fidelity_over_data']:.2f} | {r.get('profile_corr', float('nan')):.2f} "
            f"| {r.get('nn_ratio', float('nan')):.2f} | {met}/{len(r['passed'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", help="zoo names, run folders or checkpoint files")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--curve", action="store_true", help="append to RUN/target_curve.jsonl instead")
    args = parser.parse_args()
    meta = {
        "command": "python benchmarks/base_targets.py " + " ".join(args.models),
        "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
    }
    rows = []
    for spec in args.models:
        target = Path(spec)
        if args.curve and (target / "checkpoints" / "latest.json").exists():
            spec = str(target / "checkpoints" / "latest")
        row = score(spec, args.n, args.steps, args.seed)
        rows.append(row)
        if args.curve:
            with open(target / "target_curve.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    print(table(rows))
    if not args.curve:
        stored = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
        keep = [r for r in stored["rows"] if r["model"] not in {row["model"] for row in rows}]
        args.out.write_text(json.dumps({"meta": meta, "rows": keep + rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
