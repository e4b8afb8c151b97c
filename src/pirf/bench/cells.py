"""One cell of the bench table: a row (method) on a benchmark at a step count.

Every model row draws sample i from the noise of seed (cfg.seed, i) (`generate_samples`), so all
methods start from the same latents. A cell holds the residual per region (median and mean MSE
in physical units, and the ratio to the data floor), the fidelity score and its terms against the
held-out reference set (`fidelity_report`), the diversity ratio, and the test-time cost (seconds
per 100 samples, network calls per sample, whether gradients are needed).

The guidance baselines get their fair chance (`sweep_dps`, `sweep_cocogen`): every setting of
their grid is tried on other seeds (cfg.sweep_seed), and the setting with the lowest median
residual that the fidelity guard admits against the base model on those seeds
(`pirf.evaluation.guard`: the score within ``fidelity_tolerance``, every channel's spectrum, std
and amplitude errors within theirs) is the one the table reports; each trial records the guard's
verdict. A setting that diverges is recorded as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pirf import pdes
from pirf.bench.config import GRADIENT_ROWS, BenchConfig
from pirf.data import read_fields
from pirf.errors import NonFiniteError
from pirf.evaluation.guard import GuardTolerances, admissible, judge
from pirf.evaluation.metrics import channel_terms
from pirf.evaluation.reference import REFERENCE_SEED_OFFSET, held_out_reference, reference_for
from pirf.evaluation.runner import score_samples
from pirf.models.record import record_pde
from pirf.normalization import Normalization
from pirf.rewards import ResidualReward
from pirf.sampling import SampleOutput
from pirf.sampling.draw import Chain, Model, Samples, generate_samples
from pirf.sampling.guidance import (
    Guidance,
    cocogen_correct,
    pg_unguided_steps,
    sample_euler_pg,
    sample_heun_dps,
)

KEEP = 8  # samples kept per cell for the figures
TEST_SEED_OFFSET = REFERENCE_SEED_OFFSET + 1
"""The ``data`` row's solver seed = training seed + this (apart from the fidelity reference's)."""


@dataclass
class BenchContext:
    """What every cell of one benchmark shares."""

    benchmark: str
    base: str
    model: Model
    record: dict[str, Any]
    pde: pdes.PDE
    reference: np.ndarray
    floor: dict[str, dict[str, float]]
    reward: ResidualReward
    normalization: Normalization

    @classmethod
    def load(cls, cfg: BenchConfig, benchmark: str, base: str, progress: bool) -> BenchContext:
        from pirf.models.loading import load_model

        model, record, _ = load_model(base)
        pde = record_pde(record)
        ref_path, _ = reference_for(record, None, cfg.n_reference, progress=progress)
        floor = record.get("data", {}).get("floor") or {}
        norm = Normalization.from_dict(record["normalization"])
        return cls(
            benchmark, base, model, record, pde, read_fields(ref_path), floor, ResidualReward(pde), norm
        )

    def guidance_loss(self) -> Callable[[Tensor], Tensor]:
        """||R(x)||_2 of model-space fields x, read as the reward reads them."""
        return lambda x: self.reward.residual_norm(self.normalization.denormalize(x))


# -- scoring ------------------------------------------------------------------------------------------
def score(ctx: BenchContext, fields: np.ndarray) -> dict[str, Any]:
    """Residual per region, fidelity score and terms, every term per channel (``channels``,
    `channel_terms`), diversity ratio of physical ``fields``."""
    result = score_samples(ctx.pde, fields, ctx.reference, ctx.floor)
    out: dict[str, Any] = {"n": result["n"], "nonfinite": result["nonfinite"]}
    residual = result.get("residual") or {}
    out["residual"] = {region: stats["median_mse"] for region, stats in residual.items()}
    out["residual_mean"] = {region: stats["mean_mse"] for region, stats in residual.items()}
    out["ratio_to_floor"] = result.get("ratio_to_floor") or {}
    fidelity = result.get("fidelity")
    out["fidelity"] = fidelity["fidelity_score"] if fidelity else None
    out["terms"] = fidelity["score_terms"] if fidelity else {}
    out["channels"] = channel_terms(fidelity, ctx.pde.fields) if fidelity else {}
    out["diversity"] = fidelity["diversity"]["ratio"] if fidelity else None
    return out


def _cost(samples: Samples | None, row: str) -> dict[str, Any]:
    if samples is None:
        return {"seconds_per_100": None, "network_calls_per_sample": None, "gradients": False}
    cost = {
        "seconds_per_100": 100 * samples.seconds / len(samples.fields),
        "network_calls_per_sample": samples.nfe_per_sample,
        "gradients": row in GRADIENT_ROWS,
        "device": samples.device,
    }
    if row == "pgdiffusion":  # N calls, and a residual gradient (no network backward) per guided step
        cost["residual_gradients_per_sample"] = samples.steps - pg_unguided_steps(samples.steps)
    return cost


def cell_result(ctx: BenchContext, row: str, steps: int, fields: np.ndarray, samples: Samples | None) -> dict:
    return {
        "benchmark": ctx.benchmark,
        "method": row,
        "steps": steps,
        **score(ctx, fields),
        "cost": _cost(samples, row),
    }


# -- chains -------------------------------------------------------------------------------------------
def dps_chain(
    ctx: BenchContext, zeta: float, fraction: float, corrections: int = 0, zeta_c: float = 0.0
) -> Chain:
    """DPS guidance (and, with ``corrections``, CoCoGen's final corrections) as a sampling chain."""
    loss = ctx.guidance_loss()

    def chain(model: Model, noise: Tensor, sigmas: Tensor) -> SampleOutput:
        out = sample_heun_dps(model, noise, sigmas, Guidance(loss, zeta, fraction))
        if corrections:
            out.x0 = cocogen_correct(out.x0, loss, zeta_c, corrections)
        return out

    return chain


def pg_chain(ctx: BenchContext) -> Chain:
    """PG-Diffusion's chain: Euler, the first ceil(0.3 N) steps unguided, the others guided by
    grad ||R(x)||_2 at the current state (`sample_euler_pg`)."""
    loss = ctx.guidance_loss()

    def chain(model: Model, noise: Tensor, sigmas: Tensor) -> SampleOutput:
        return sample_euler_pg(model, noise, sigmas, loss)

    return chain


def chain_for(cfg: BenchConfig, ctx: BenchContext, row: str, setting: dict[str, Any]) -> Chain | None:
    """The sampling chain of a guidance row at its chosen ``setting``, or PG-Diffusion's (None:
    plain Heun)."""
    if row == "pgdiffusion":
        return pg_chain(ctx)
    if row not in ("dps", "cocogen"):
        return None
    corrections, zeta_c = setting.get("corrections", 0), setting.get("zeta_c", 0.0)
    return dps_chain(ctx, setting["zeta"], cfg.dps.fraction, corrections, zeta_c)


def draw(
    cfg: BenchConfig,
    ctx: BenchContext,
    model: Model,
    record: dict,
    steps: int,
    *,
    sweep: bool = False,
    chain: Chain | None = None,
) -> Samples:
    """The bench's samples of ``model`` (the main seeds, or the sweep seeds)."""
    n, seed = (cfg.sweep_n, cfg.sweep_seed) if sweep else (cfg.n, cfg.seed)
    kw = {"batch_size": cfg.batch_size, "device": cfg.device, "progress": False, "chain": chain}
    return generate_samples(model, record, n, steps, seed, **kw)


def data_fields(cfg: BenchConfig, ctx: BenchContext, progress: bool) -> np.ndarray:
    """``cfg.n`` solver samples of the benchmark on seeds disjoint from training and reference."""
    seed = int(ctx.record.get("data", {}).get("seed", 0)) + TEST_SEED_OFFSET
    path = held_out_reference(ctx.pde, int(ctx.record["resolution"]), seed, cfg.n, progress=progress)
    return read_fields(path)


# -- sweeps -------------------------------------------------------------------------------------------
def _try(ctx: BenchContext, make: Callable[[], np.ndarray]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        result = score(ctx, make())
    except NonFiniteError as err:
        return {"diverged": True, "why": err.problem, "residual": {}, "fidelity": None}
    return {"diverged": result["nonfinite"] > 0, **result, "seconds": time.perf_counter() - t0}


def _tolerances(tolerance: float | GuardTolerances) -> GuardTolerances:
    return tolerance if isinstance(tolerance, GuardTolerances) else GuardTolerances(fidelity=tolerance)


def judged(
    trials: list[dict[str, Any]], base: dict[str, Any], tolerance: float | GuardTolerances
) -> list[dict[str, Any]]:
    """``trials``, each with ``guard``: the fidelity guard's verdict against ``base``."""
    return [t | {"guard": judge(t, base, _tolerances(tolerance)).to_dict()} for t in trials]


def choose(
    trials: list[dict[str, Any]], base: dict[str, Any], tolerance: float | GuardTolerances
) -> dict[str, Any]:
    """The trial with the lowest median residual that the fidelity guard admits (``tolerance``:
    `GuardTolerances`, or a float, the composite's, with the per-channel defaults); if none is
    admissible, the finite one with the lowest residual, flagged ``"admissible": False``."""
    finite = [t for t in trials if not t.get("diverged") and t["residual"]]
    if not finite:
        raise NonFiniteError(
            "every setting of the guidance sweep diverged", "add smaller step sizes to the grid"
        )
    kept = [t for t in finite if admissible(t, base, _tolerances(tolerance))]
    best = min(kept or finite, key=lambda t: t["residual"]["all"])
    return {**best["setting"], "admissible": bool(kept)}


def sweep_dps(cfg: BenchConfig, ctx: BenchContext, steps: int, base_sweep: dict) -> dict[str, Any]:
    """Every zeta of ``cfg.dps.zetas`` on the sweep seeds; returns the trials and the choice."""
    trials = []
    for zeta in cfg.dps.zetas:
        chain = dps_chain(ctx, zeta, cfg.dps.fraction)
        trial = _try(
            ctx,
            lambda chain=chain: draw(cfg, ctx, ctx.model, ctx.record, steps, sweep=True, chain=chain).fields,
        )
        trials.append({"setting": {"zeta": zeta}, **trial})
    tolerances = GuardTolerances.of(cfg)
    return {
        "base": base_sweep,
        "trials": judged(trials, base_sweep, tolerances),
        "chosen": choose(trials, base_sweep, tolerances),
    }


def sweep_cocogen(
    cfg: BenchConfig, ctx: BenchContext, steps: int, dps: dict, base_sweep: dict
) -> dict[str, Any]:
    """CoCoGen's (M, zeta_c) grid on top of the chosen DPS chain, on the sweep seeds: the guided
    samples are drawn once (in model space) and every correction setting is applied to them."""
    zeta = dps["chosen"]["zeta"]
    kept: dict[str, Tensor] = {}

    def chain(model: Model, noise: Tensor, sigmas: Tensor) -> SampleOutput:
        out = sample_heun_dps(model, noise, sigmas, Guidance(ctx.guidance_loss(), zeta, cfg.dps.fraction))
        kept["x0"] = torch.cat([kept["x0"], out.x0]) if "x0" in kept else out.x0
        return out

    draw(cfg, ctx, ctx.model, ctx.record, steps, sweep=True, chain=chain)
    guided, loss, trials = kept["x0"], ctx.guidance_loss(), []
    for m in cfg.cocogen.corrections:
        for zeta_c in cfg.cocogen.zetas:

            def corrected(m: int = m, zeta_c: float = zeta_c) -> np.ndarray:
                x = cocogen_correct(guided, loss, zeta_c, m)
                return ctx.normalization.denormalize(x).numpy()

            trials.append(
                {"setting": {"zeta": zeta, "corrections": m, "zeta_c": zeta_c}, **_try(ctx, corrected)}
            )
    tolerances = GuardTolerances.of(cfg)
    return {
        "base": base_sweep,
        "trials": judged(trials, base_sweep, tolerances),
        "chosen": choose(trials, base_sweep, tolerances),
    }


__all__ = [
    "KEEP",
    "BenchContext",
    "admissible",
    "cell_result",
    "chain_for",
    "choose",
    "data_fields",
    "dps_chain",
    "draw",
    "judged",
    "pg_chain",
    "score",
    "sweep_cocogen",
    "sweep_dps",
]
