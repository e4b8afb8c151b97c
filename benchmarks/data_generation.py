"""Measure data generation speed and the data floor of every registered benchmark.

For each PDE, at its CPU default resolution and at the paper's 128x128 (with the paper's
parameters, ``PDE.paper_params``), generate a data set through the same path as
``pirf data generate`` (solve, validate, score, write HDF5) and record samples/s and the
residual floor per region. Results: ``benchmarks/results/data_generation.{json,md}``.

    python benchmarks/data_generation.py                 # all PDEs, default sample counts
    python benchmarks/data_generation.py --pdes darcy --n-cpu 10000    # the 10k-sample target
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

import pirf
import pirf.pdes as pdes
from pirf import data

RESULTS = Path(__file__).resolve().parent / "results"


def measure(name: str, resolution: int, n: int, params: dict) -> dict:
    pde = pdes.get(name, **params)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.h5"
        t0 = time.perf_counter()
        info = data.generate_dataset(pde, n, path, resolution=resolution, seed=0, progress=False)
        seconds = time.perf_counter() - t0
    return {
        "pde": name,
        "resolution": resolution,
        "params": pde.params(),
        "n": n,
        "seconds": seconds,
        "samples_per_s": n / seconds,
        "floor": info.floor,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| PDE | resolution | params | samples/s | floor MSE all | interior | boundary | interface |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(floor: dict, part: str) -> str:
        return f"{floor[part]['mean_mse']:.2e}" if part in floor else "—"

    for r in rows:
        f = r["floor"]
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        lines.append(
            f"| {r['pde']} | {r['resolution']} | {params} | {r['samples_per_s']:.1f} | {cell(f, 'all')} "
            f"| {cell(f, 'interior')} | {cell(f, 'boundary')} | {cell(f, 'interface')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pdes", nargs="*", default=pdes.names())
    parser.add_argument("--n-cpu", type=int, default=1000, help="samples at the CPU default resolution")
    parser.add_argument("--n-paper", type=int, default=100, help="samples at 128x128")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for name in args.pdes:
        cls = pdes.get_class(name)
        for resolution, n, params in (
            (cls.default_resolution, args.n_cpu, {}),
            (cls.paper_resolution, args.n_paper, dict(cls.paper_params)),
        ):
            row = measure(name, resolution, n, params)
            print(
                f"{name:10s} {resolution:4d}  {row['samples_per_s']:8.1f} samples/s  "
                f"floor {json.dumps({k: round(v['mean_mse'], 12) for k, v in row['floor'].items()})}"
            )
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "pirf_version": pirf.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
        "command": "python benchmarks/data_generation.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k in ("n_cpu", "n_paper")
        ),
    }
    (args.out / "data_generation.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    header = f"Measured with `{meta['command']}` on {meta['machine']} (pirf {pirf.__version__}).\n\n"
    (args.out / "data_generation.md").write_text(header + markdown(rows))


if __name__ == "__main__":
    main()
