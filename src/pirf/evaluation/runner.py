"""What ``pirf sample`` and ``pirf evaluate`` run: draw a model's samples and score them.

- `score_samples` is the metric path on arrays: residual statistics per region next to the data
  floor (ratio = samples' median MSE / floor's median MSE), and `fidelity_report` against a
  held-out reference set (and memorization against the training set when given).
- `evaluate` draws a model's samples at one or several step counts (`pirf.sampling.draw`: one
  seeded draw), scores them against the held-out reference (`pirf.evaluation.reference`) and
  (with ``out``) writes ``report.json``, ``report.md`` and figures (`pirf.evaluation.report`).
- `sample` streams a model's samples, guided or not (`pirf.sampling.guided`), to a data file.

Models are found and loaded by `pirf.models.loading`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import pirf
from pirf import pdes
from pirf.data import read_fields
from pirf.disk import scratch_array
from pirf.errors import ConfigError
from pirf.evaluation.fields import finite_rows
from pirf.evaluation.figures import N_SHOW
from pirf.evaluation.metrics import fidelity_report, relative_to_floor, residual_summary
from pirf.evaluation.reference import REFERENCE_SEED_OFFSET, resolve_reference, training_set
from pirf.evaluation.report import EVALUATION_FILES, Evaluation, check_outputs, write_evaluation
from pirf.evaluation.sample_files import SAMPLE_FILES, write_sample_files
from pirf.files import jsonable
from pirf.locks import output_lock
from pirf.models.loading import load_model
from pirf.models.record import record_pde
from pirf.sampling.draw import Samples, SampleStream, check_sampling, resolve_device
from pirf.sampling.guided import (
    PG_DESCRIPTION,
    GuidanceSettings,
    guidance_chain,
    guided_sampler,
    pg_chain,
    pg_sampler,
    physics_guided,
)


# -- the metric path ---------------------------------------------------------------------------------
def score_samples(
    pde: pdes.PDE,
    samples: np.ndarray,
    reference: np.ndarray,
    floor: dict[str, dict[str, float]],
    *,
    train: np.ndarray | None = None,
) -> dict[str, Any]:
    """Residual statistics of ``samples`` beside the data ``floor``, and fidelity to ``reference``.

    ``residual[region]`` = mean/median over samples of the per-sample residual MSE and MAE;
    ``ratio_to_floor[region]`` = median MSE / the floor's median MSE (`relative_to_floor`; < 1
    is "below the data there", a sign of reward hacking on that region when it is far below);
    ``fidelity`` = `fidelity_report` (with memorization when ``train`` is given). Non-finite
    samples are counted in ``nonfinite`` and left out of every statistic.
    """
    finite = finite_rows(samples)
    out: dict[str, Any] = {"n": len(samples), "nonfinite": int((~finite).sum())}
    kept = samples if finite.all() else samples[finite]  # no copy of an all-finite (memory-mapped) set
    if len(kept) == 0:
        return out | {"residual": {}, "ratio_to_floor": {}, "mean_ratio_to_floor": {}, "fidelity": None}
    residual = residual_summary(pde, kept)  # scored after PDE.project (ResidualAccumulator)
    out["residual"] = residual
    out["ratio_to_floor"] = relative_to_floor(residual, floor, "median_mse")
    out["mean_ratio_to_floor"] = relative_to_floor(residual, floor, "mean_mse")
    out["fidelity"] = fidelity_report(pde, kept, reference, train=train) if len(kept) >= 2 else None
    return out


# -- the whole evaluation ----------------------------------------------------------------------------
def _model_summary(record: dict[str, Any], path: Path) -> dict[str, Any]:
    return {
        "path": str(path),
        "sha256": record.get("sha256"),
        "pde": record["pde"],
        "pde_params": record.get("pde_params", {}),
        "fields": record.get("fields"),
        "resolution": record["resolution"],
        "kind": record["model"].get("kind"),
        "stage": record.get("stage"),
        "step": record.get("step"),
        "train_seconds": record.get("train_seconds"),
    }


def run_evaluation(
    spec: str | os.PathLike,
    *,
    n: int = 256,
    steps: Sequence[int] = (20,),
    seed: int = 0,
    sampler: str = "heun",
    reference: str | os.PathLike | None = None,
    train: str | os.PathLike | None = None,
    n_reference: int = 256,
    batch_size: int = 64,
    device: str | None = None,
    cache: Path | None = None,
    progress: bool = True,
) -> Evaluation:
    """Sample the model SPEC at each step count and score the samples (see `evaluate`)."""
    steps = list(dict.fromkeys(steps))  # unique, in the given order
    if not steps:
        raise ConfigError("no step count given", "pass --steps S (repeatable: --steps 20 --steps 80)")
    for s in steps:
        check_sampling(n, s, batch_size, sampler, seed)
    if n < 2:
        raise ConfigError(f"evaluation needs at least 2 samples, got n={n}", "pass --n 2 or more")
    resolve_device(device)
    t0 = time.perf_counter()
    model, record, path = load_model(spec)
    chain = pg_chain(record) if physics_guided(record) else None  # PG-Diffusion: its own chain
    sampler = "euler" if chain is not None else sampler
    pde, resolution = record_pde(record), int(record["resolution"])
    ref_path, ref_note = resolve_reference(record, pde, resolution, reference, n_reference, cache, progress)
    ref = read_fields(ref_path)
    train_path, train_note = training_set(record, pde, resolution, train)
    train_fields = read_fields(train_path) if train_path is not None else None
    if train_path is not None and Path(ref_path).resolve() == train_path.resolve():
        ref_note["source"] += (
            "; WARNING: it is the training set, so fidelity is not measured on held-out data"
        )
    floor = record.get("data", {}).get("floor") or {}
    floor_source = "the training data (model record)"
    if not floor:
        floor, floor_source = residual_summary(pde, ref), "the reference set (the record has no floor)"
    report: dict[str, Any] = {
        "pirf_version": pirf.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": _model_summary(record, path),
        "settings": {"n": n, "steps": steps, "seed": seed, "sampler": sampler, "batch_size": batch_size},
        "reference": ref_note,
        "train": {"path": None if train_path is None else str(train_path), "note": train_note}
        | ({"n": len(train_fields)} if train_fields is not None else {}),
        "floor": floor,
        "floor_source": floor_source,
        "runs": [],
    }
    samples: dict[int, np.ndarray] = {}
    for s in steps:
        stream = SampleStream(
            model,
            record,
            n,
            s,
            seed,
            sampler,
            batch_size=batch_size,
            device=device,
            progress=progress,
            keep=0,
            chain=chain,
        )
        drawn, samples[s] = _draw_to_scratch(stream)
        run = {"steps": s, "cost": drawn.cost()}
        run |= score_samples(pde, samples[s], ref, floor, train=train_fields)
        report["runs"].append(run)
    report["seconds"] = time.perf_counter() - t0
    return Evaluation(jsonable(report), samples, ref, pde)


def _draw_to_scratch(stream: SampleStream) -> tuple[Samples, np.ndarray]:
    """Draw ``stream`` into a disk-backed array (`pirf.disk.scratch_array`): an evaluation of
    any number of samples holds one batch in memory, the rest is paged by the kernel."""
    model = stream.model
    fields = scratch_array(
        (stream.n, model.channels, model.resolution, model.resolution), f"{stream.n} evaluation samples"
    )
    position = 0
    for batch in stream:
        fields[position : position + len(batch)] = batch
        position += len(batch)
    return stream.samples(), fields


def evaluate(
    spec: str | os.PathLike,
    *,
    n: int = 256,
    steps: Sequence[int] = (20,),
    seed: int = 0,
    sampler: str = "heun",
    reference: str | os.PathLike | None = None,
    train: str | os.PathLike | None = None,
    n_reference: int = 256,
    batch_size: int = 64,
    device: str | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    cache: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the model SPEC (`resolve_model`): for each step count in ``steps`` draw ``n``
    samples (seed ``seed``, `generate_samples`) and score them (`score_samples`): residual per
    region beside the data floor of the model's record, fidelity to a held-out reference set
    (``reference``, or ``n_reference`` freshly solved samples, cached under ``cache`` or
    `cache_dir`), memorization against the training set (``train``, or the record's data file
    when it is here; else skipped, and the report says so), and cost.

    Returns the report (JSON-able dict: ``model``, ``settings``, ``reference``, ``train``,
    ``floor``, ``runs`` = one entry per step count). With ``out`` writes ``report.json``,
    ``report.md``, ``samples.png``, ``residuals.png`` and ``spectra.png`` there; existing ones
    are an `OutputExistsError` unless ``overwrite``, checked before any sampling.
    """
    lock = output_lock(out, "an evaluation folder") if out is not None else contextlib.nullcontext()
    with lock:
        if out is not None:
            check_outputs(Path(out), EVALUATION_FILES, overwrite)
        result = run_evaluation(
            spec,
            n=n,
            steps=steps,
            seed=seed,
            sampler=sampler,
            reference=reference,
            train=train,
            n_reference=n_reference,
            batch_size=batch_size,
            device=device,
            cache=cache,
            progress=progress,
        )
        if out is not None:
            write_evaluation(result, Path(out), overwrite=overwrite)
        return result.report


# -- pirf sample -------------------------------------------------------------------------------------
def sample(
    spec: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int = 16,
    steps: int = 20,
    seed: int = 0,
    sampler: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    guidance: GuidanceSettings | None = None,
) -> tuple[Path, Samples, dict[str, Any]]:
    """Draw ``n`` samples of the model SPEC and write ``out/samples.h5`` (a pirf data file in
    physical units whose ``floor`` is the model's data floor, so ``pirf data check`` compares the
    samples with the data) and ``out/samples.png``. Returns (file, samples, checkpoint record).

    The samples are written batch by batch as they are drawn (`SampleStream`), so memory stays
    bounded by one batch for any ``n``; the returned `Samples` holds the first few and the cost.
    ``sampler`` defaults to heun; ``guidance`` (`GuidanceSettings`) guides the chain by the
    model's PDE residual reward (DPS on Heun, or value-guided DDIM) and is recorded in the
    file's provenance under ``guidance``. ``out`` is locked while it is written: a second
    writer of it is refused (`pirf.locks`)."""
    with output_lock(out, "a sample folder"):
        return _sample(
            spec,
            out,
            n=n,
            steps=steps,
            seed=seed,
            sampler=sampler,
            batch_size=batch_size,
            device=device,
            overwrite=overwrite,
            progress=progress,
            guidance=guidance,
        )


def _sample(
    spec: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int = 16,
    steps: int = 20,
    seed: int = 0,
    sampler: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    guidance: GuidanceSettings | None = None,
) -> tuple[Path, Samples, dict[str, Any]]:
    out = Path(out)
    guidance = guidance or GuidanceSettings()
    guidance.check()
    requested, sampler = sampler, guided_sampler(guidance, sampler)
    check_outputs(out, SAMPLE_FILES, overwrite)
    check_sampling(n, steps, batch_size, sampler, seed)
    resolve_device(device)
    model, record, path = load_model(spec)
    pg = physics_guided(record)  # a PG-Diffusion model samples with its own chain
    sampler = pg_sampler(guidance, requested) if pg else sampler
    chain = guidance_chain(guidance, record)
    stream = SampleStream(
        model,
        record,
        n,
        steps,
        seed,
        sampler,
        batch_size=batch_size,
        device=device,
        progress=progress,
        chain=chain,
        keep=N_SHOW,
    )

    def provenance() -> dict[str, Any]:
        return {
            "model": str(path),
            "sha256": record.get("sha256"),
            "sampler": sampler,
            "steps": steps,
            "seed": seed,
            "n": n,
            "guidance": PG_DESCRIPTION if pg else guidance.describe(),
            **stream.samples().cost(),
        }

    fix = (
        "guide more gently: a larger --alpha (value) or a smaller --zeta (dps), or more --steps"
        if guidance.kind != "none"
        else "the model diverged: use another checkpoint, or more sampler steps"
    )
    file = write_sample_files(
        out, stream, record_pde(record), record, provenance, overwrite=overwrite, nonfinite_fix=fix
    )
    return file, stream.samples(), record


__all__ = [
    "REFERENCE_SEED_OFFSET",
    "evaluate",
    "run_evaluation",
    "sample",
    "score_samples",
]
