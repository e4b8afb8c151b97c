"""Record a `pirf bench` run in the repository: its tables and figures, and the results page.

    python benchmarks/bench_results.py [--bench runs/bench/cpu] [--name NAME]

Copies ``table.{md,csv,json}``, ``figures/*.png`` and any ``family_cost_*.json`` of the bench
folder to ``benchmarks/results/bench/<NAME>/`` (NAME: the bench's scale unless given; a family
comparison gets its own, e.g. ``cpu-family-darcy``) and rewrites that table's section of
``docs/results.md`` (between its ``<!-- bench table: ... NAME ... -->`` markers) from
``table.md``. The numbers in the docs are then the numbers of that run, and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
START = "<!-- bench table: from benchmarks/results/bench/{name}/table.md -->"
END = "<!-- end of bench table -->"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def record(bench: Path, name: str) -> Path:
    dest = ROOT / "benchmarks" / "results" / "bench" / name
    (dest / "figures").mkdir(parents=True, exist_ok=True)
    for table in ("table.md", "table.csv", "table.json"):
        shutil.copy2(bench / table, dest / table)
    for cost in sorted(bench.glob("family_cost_*.json")):
        shutil.copy2(cost, dest / cost.name)
    for figure in sorted((bench / "figures").glob("*.png")):
        shutil.copy2(figure, dest / "figures" / figure.name)
    (dest / "machine.txt").write_text(machine() + "\n")
    return dest


def fill_docs(dest: Path, name: str) -> None:
    page = ROOT / "docs" / "results.md"
    text, start = page.read_text(), START.format(name=name)
    if start not in text or END not in text:
        raise SystemExit(f"{page} has no '{start}' ... '{END}' section to fill")
    table = (dest / "table.md").read_text().split("\n", 2)[2].strip()  # without its title line
    head, rest = text.split(start, 1)
    tail = rest.split(END, 1)[1]
    page.write_text(f"{head}{start}\n{table}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("runs/bench/cpu"))
    parser.add_argument("--name", help="the results folder and docs section (default: the bench's scale)")
    args = parser.parse_args()
    name = args.name or json.loads((args.bench / "config.json").read_text())["scale"]
    dest = record(args.bench, name)
    fill_docs(dest, name)
    print(f"recorded {args.bench} in {dest} and docs/results.md")


if __name__ == "__main__":
    main()
