"""`run_bench`: every (benchmark, row, step count) cell, each written as soon as it is done.

Folder ``cfg.out``::

    config.json                      the bench config (a resumed bench must match it)
    cells/<benchmark>/<row>@<N>.json one per cell (`pirf.bench.cells`)
    samples/<benchmark>/<row>@<N>.npy the first `KEEP` samples of the cell, for the figures
    sweeps/<benchmark>/<name>@<N>.json the guidance sweeps (every setting tried, the choice)
    models/<benchmark>/<row>/        the runs it trained (`pirf.bench.models`)
    table.{json,csv,md}, figures/    rewritten after every benchmark (`pirf.bench.table`)

Interrupted, it loses at most the cell (or the fine-tune checkpoint interval) in progress:
``--resume`` keeps every finished cell and sweep, resumes an unfinished training run, and
recomputes nothing else.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from pirf.bench.cells import (
    KEEP,
    BenchContext,
    cell_result,
    chain_for,
    data_fields,
    draw,
    score,
    sweep_cocogen,
    sweep_dps,
)
from pirf.bench.config import BenchConfig
from pirf.bench.figures import write_figures
from pirf.bench.models import CONTINUED, base_spec, continued_model, finetuned_model
from pirf.bench.table import write_tables
from pirf.config import to_dict
from pirf.errors import ConfigError, OutputExistsError
from pirf.evaluation.report import write_json
from pirf.files import atomic_write, crash_point, jsonable
from pirf.locks import output_lock
from pirf.models.loading import load_model
from pirf.sampling.draw import Model

RUN_KEYS_FREE = ("benchmarks", "methods", "device", "batch_size", "out")
"""Config keys a resumed bench may change: they do not change what a finished cell holds."""


def cell_path(out: Path, benchmark: str, row: str, steps: int, kind: str = "cells") -> Path:
    return out / kind / benchmark / f"{row}@{steps}.{'npy' if kind == 'samples' else 'json'}"


def _prepare(cfg: BenchConfig, resume: bool) -> Path:
    out = Path(cfg.out)
    stored = out / "config.json"
    mine = {k: v for k, v in to_dict(cfg).items() if k not in RUN_KEYS_FREE}
    if stored.exists():
        if not resume:
            raise OutputExistsError(
                f"{out} already holds a bench", "pass --resume to continue it, or choose another --out"
            )
        # a setting the stored bench predates holds its default there (pirf added it since)
        held = to_dict(BenchConfig()) | json.loads(stored.read_text())
        theirs = {k: v for k, v in held.items() if k not in RUN_KEYS_FREE}
        if jsonable(theirs) != jsonable(mine):
            changed = sorted(k for k in mine if theirs.get(k) != jsonable(mine[k]))
            raise ConfigError(
                f"{out} holds a bench of other settings ({', '.join(changed)} differ)",
                "resume with the settings it was started with, or choose another --out",
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json(stored, to_dict(cfg))
    return out


class RowModels:
    """The model of each row of one benchmark, trained on first use and loaded once."""

    def __init__(self, cfg: BenchConfig, ctx: BenchContext, progress: bool) -> None:
        self.cfg, self.ctx, self.progress = cfg, ctx, progress
        self.loaded: dict[str, tuple[Model, dict[str, Any]]] = {}

    def get(self, row: str) -> tuple[Model, dict[str, Any]]:
        """(model, record) of ``row``: the base model for base/dps/cocogen, else its trained one."""
        if row in ("base", "dps", "cocogen"):
            return self.ctx.model, self.ctx.record
        if row not in self.loaded:
            c, ctx = self.cfg, self.ctx
            if row in CONTINUED:  # pidm, pgdiffusion: the base model trained on
                path = continued_model(c, ctx.benchmark, row, ctx.base, ctx.record, self.progress)
            else:
                path = finetuned_model(c, ctx.benchmark, row, ctx.base, self.progress)
            model, record, _ = load_model(path)
            self.loaded[row] = (model, record)
        return self.loaded[row]


def _sweep(out: Path, ctx: BenchContext, name: str, steps: int, compute) -> dict[str, Any]:
    path = cell_path(out, ctx.benchmark, name, steps, "sweeps")
    if path.exists():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return result


def _base_sweep(cfg: BenchConfig, out: Path, ctx: BenchContext, steps: int) -> dict[str, Any]:
    return _sweep(
        out,
        ctx,
        "base",
        steps,
        lambda: score(ctx, draw(cfg, ctx, ctx.model, ctx.record, steps, sweep=True).fields),
    )


def _dps_sweep(cfg: BenchConfig, out: Path, ctx: BenchContext, steps: int) -> dict[str, Any]:
    base = _base_sweep(cfg, out, ctx, steps)
    return _sweep(out, ctx, "dps", steps, lambda: sweep_dps(cfg, ctx, steps, base))


def compute_cell(
    cfg: BenchConfig, out: Path, ctx: BenchContext, models: RowModels, row: str, steps: int, progress: bool
):
    """(cell record, physical fields) of one cell."""
    if row == "data":
        fields = data_fields(cfg, ctx, progress)
        return cell_result(ctx, row, steps, fields, None), fields
    setting: dict[str, Any] = {}
    if row == "dps":
        setting = _dps_sweep(cfg, out, ctx, steps)["chosen"]
    elif row == "cocogen":
        dps = _dps_sweep(cfg, out, ctx, steps)
        base = _base_sweep(cfg, out, ctx, steps)
        setting = _sweep(out, ctx, "cocogen", steps, lambda: sweep_cocogen(cfg, ctx, steps, dps, base))[
            "chosen"
        ]
    chain = chain_for(cfg, ctx, row, setting)
    model, record = models.get(row)
    samples = draw(cfg, ctx, model, record, steps, chain=chain)
    result = cell_result(ctx, row, steps, samples.fields, samples)
    result["setting"] = setting
    result["train_seconds"] = record.get("train_seconds") if record is not ctx.record else None
    return result, samples.fields


def _write_cell(out: Path, ctx: BenchContext, row: str, steps: int, result: dict, fields: np.ndarray) -> None:
    path = cell_path(out, ctx.benchmark, row, steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    cell_path(out, ctx.benchmark, row, steps, "samples").parent.mkdir(parents=True, exist_ok=True)

    def save(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.save(f, fields[:KEEP])

    atomic_write(cell_path(out, ctx.benchmark, row, steps, "samples"), save)
    crash_point("bench.samples-written")
    write_json(path, result)  # last: a cell file means the cell is complete
    crash_point("bench.cell-written")


def _describe(result: dict[str, Any], seconds: float) -> str:
    residual = result["residual"].get("all")
    fidelity = result.get("fidelity")
    text = f"residual {residual:.3g}" if residual is not None else "no finite sample"
    if fidelity is not None:
        text += f", fidelity {fidelity:.3g}"
    return text + f" ({seconds:.0f} s)"


def run_bench(
    cfg: BenchConfig, *, resume: bool = False, progress: bool = True, console: Console | None = None
) -> dict[str, Any]:
    """Run (or continue) the bench of ``cfg``; returns the table (`write_tables`). The bench folder
    is locked for the run's life: a second bench into it is refused (`pirf.locks`)."""
    with output_lock(cfg.out, "a bench"):
        return _run_bench(cfg, resume, progress, console or Console(quiet=not progress))


def _run_bench(cfg: BenchConfig, resume: bool, progress: bool, console: Console) -> dict[str, Any]:
    out = _prepare(cfg, resume)
    table: dict[str, Any] = {}
    for benchmark in cfg.benchmarks:
        base = base_spec(cfg, benchmark, progress)
        ctx = BenchContext.load(cfg, benchmark, base, progress)
        models = RowModels(cfg, ctx, progress)
        for row in cfg.methods:
            for steps in cfg.steps_for(row):
                if cell_path(out, benchmark, row, steps).exists():
                    continue
                t0 = time.perf_counter()
                result, fields = compute_cell(cfg, out, ctx, models, row, steps, progress)
                _write_cell(out, ctx, row, steps, result, fields)
                console.print(f"{benchmark} {row} @{steps}: {_describe(result, time.perf_counter() - t0)}")
        table = write_tables(out)
        write_figures(out, benchmark, ctx.pde)
    return table


__all__ = ["cell_path", "compute_cell", "run_bench"]
