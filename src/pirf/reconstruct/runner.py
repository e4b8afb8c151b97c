"""`pirf reconstruct`: fields reconstructed from sparse observations of held-out solver data.

Case i reconstructs sample i of a data file from the pixels its observation mask shows
(`ObservationPlan.masks`, seeded by (seed, i)); its chain starts from the noise of (seed, i), the
rule of every pirf draw (`pirf.sampling.draw.sample_seed`). A method's weights not given are
chosen on *other* cases -- samples n .. n + tune - 1 of the same file, with their own masks and
noise -- by a coordinate sweep (the observation weight first, then the residual weight), as the
bench chooses DPS's step size on held-out seeds: the reported cases never inform the setting.

Scores per channel (DiffusionPDE's, Huang et al. 2024): the relative L2 error of the whole
field, ||x_rec - x_true||_2 / ||x_true||_2, for continuous channels, and the share of wrongly
snapped pixels for a PDE's discrete channels (`PDE.discrete_fields`, Darcy's ``a``); beside them
the reconstructions' PDE residual against the data floor, and network and gradient calls.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track

import pirf
from pirf import pdes
from pirf.data import read_fields
from pirf.errors import ConfigError, DataFileError, NonFiniteError, UnknownNameError
from pirf.evaluation.metrics import relative_to_floor, residual_summary
from pirf.evaluation.reference import check_data_file
from pirf.files import jsonable
from pirf.models.loading import LoadedModel, load_model
from pirf.normalization import Normalization
from pirf.reconstruct.methods import METHODS, Guidance, Method, Observations, Projection, run_method
from pirf.reconstruct.observe import ObservationPlan
from pirf.rewards import ResidualReward
from pirf.sampling.chain import per_sample_noise
from pirf.sampling.draw import check_sampling, resolve_device, sample_seed, sigma_grid
from pirf.sampling.guided import refuse_physics_guided

ZETA_OBS_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
"""Observation weights the sweep tries (normalized units: each channel has unit variance)."""
ZETA_PDE_GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""Residual weights the sweep tries (physical residual units; 0 is observation guidance alone)."""


@dataclass
class Problem:
    """Everything a reconstruction run needs besides the method: the prior, its PDE and
    normalization, the sampler grid and the residual norm the guidance descends."""

    loaded: LoadedModel
    pde: pdes.PDE
    norm: Normalization
    sigmas: torch.Tensor
    steps: int
    seed: int
    batch_size: int
    device: torch.device

    def residual_norm(self, x0: torch.Tensor) -> torch.Tensor:
        """||R||_2 of model-space fields (the physical residual of their denormalized values)."""
        return self.reward.residual_norm(self.norm.denormalize(x0))

    def __post_init__(self) -> None:
        self.reward = ResidualReward(self.pde)


@dataclass
class Outcome:
    """Reconstructions of some cases: physical fields and what they cost per case."""

    fields: np.ndarray  # [n, C, H, W]
    network_calls: int  # forward calls per case (those inside gradients included)
    gradient_calls: int  # backward passes per case
    seconds: float


def reconstruct_cases(
    problem: Problem,
    method: Method,
    truth: np.ndarray,
    masks: np.ndarray,
    cases: Sequence[int],
    progress: bool,
) -> Outcome:
    """Reconstruct ``truth`` (physical, ``[n, C, H, W]``) seen through ``masks`` with ``method``;
    case ``cases[k]`` starts from the noise of (seed, cases[k])."""
    model, norm = problem.loaded.module, problem.norm
    out, calls, t0 = [], 0, time.perf_counter()
    starts = range(0, len(truth), problem.batch_size)
    for start in track(starts, f"{method.name} {problem.steps} steps", disable=not progress, transient=True):
        stop = min(start + problem.batch_size, len(truth))
        mask = torch.from_numpy(masks[start:stop]).float().to(problem.device)
        values = mask * norm.normalize(torch.from_numpy(truth[start:stop]).to(problem.device))
        gens = [torch.Generator().manual_seed(sample_seed(problem.seed, i)) for i in cases[start:stop]]
        noise = per_sample_noise(tuple(mask.shape), gens, device=problem.device)
        result = run_method(
            method, model, noise, problem.sigmas, Observations(mask, values), problem.residual_norm
        )
        out.append(norm.denormalize(result.x0.float()).cpu().numpy())
        calls = result.nfe
    fields = np.concatenate(out)
    return Outcome(fields, calls, method.gradient_steps(problem.steps), time.perf_counter() - t0)


# -- scores ------------------------------------------------------------------------------------------
def channel_errors(pde: pdes.PDE, fields: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per channel, one error per case: relative L2 (continuous) or wrongly snapped share (discrete)."""
    projected = pde.project(torch.from_numpy(fields)).numpy() if pde.discrete_fields else fields
    errors = {}
    for c, name in enumerate(pde.fields):
        if name in pde.discrete_fields:
            errors[name] = (projected[:, c] != truth[:, c]).mean(axis=(1, 2))
        else:
            diff = np.linalg.norm((fields[:, c] - truth[:, c]).reshape(len(truth), -1), axis=1)
            errors[name] = diff / np.maximum(
                np.linalg.norm(truth[:, c].reshape(len(truth), -1), axis=1), 1e-30
            )
    return errors


def error_metric(pde: pdes.PDE, name: str) -> str:
    return "error_rate" if name in pde.discrete_fields else "relative_l2"


def objective(pde: pdes.PDE, plan: ObservationPlan, errors: dict[str, np.ndarray]) -> float:
    """What the sweep minimizes: the mean error of the channels not fully observed."""
    unknown = [n for n, f in zip(plan.fields, plan.fractions, strict=True) if f < 1.0]
    values = [float(np.mean(errors[n])) for n in unknown]
    return float(np.mean(values)) if values and all(map(math.isfinite, values)) else math.inf


# -- choosing the weights on other cases ----------------------------------------------------------
def tune(
    problem: Problem,
    method: Method,
    plan: ObservationPlan,
    truth: np.ndarray,
    first_case: int,
    progress: bool,
) -> tuple[Method, list[dict[str, Any]]]:
    """The method's weights chosen on ``truth`` (cases first_case ..): zeta_obs over
    `ZETA_OBS_GRID` (guidance only), then zeta_pde over `ZETA_PDE_GRID`; returns the best method
    and every trial with its objective."""
    cases = list(range(first_case, first_case + len(truth)))
    masks = plan.masks(problem.seed, cases, truth.shape[-2:])
    trials: list[dict[str, Any]] = []

    def score(candidate: Method) -> float:
        try:
            outcome = reconstruct_cases(problem, candidate, truth, masks, cases, progress=False)
            value = objective(problem.pde, plan, channel_errors(problem.pde, outcome.fields, truth))
        except NonFiniteError:
            value = math.inf  # a weight that diverges is not a candidate
        trials.append(candidate.settings() | {"objective": value})
        return value

    best = method
    if isinstance(method, Guidance):
        sweep = [replace(method, zeta_obs=z, zeta_pde=0.0) for z in ZETA_OBS_GRID]
        best = min(track(sweep, "tuning zeta_obs", disable=not progress, transient=True), key=score)
    sweep = [replace(best, zeta_pde=z) for z in ZETA_PDE_GRID]
    best = min(track(sweep, "tuning zeta_pde", disable=not progress, transient=True), key=score)
    if not math.isfinite(min(t["objective"] for t in trials)):
        raise NonFiniteError(
            "every weight of the sweep diverged on the tuning cases", "give --zeta-obs / --zeta-pde yourself"
        )
    return best, trials


# -- the whole run ---------------------------------------------------------------------------------
@dataclass
class Reconstruction:
    """A reconstruction run: its JSON-able ``report`` and the arrays its outputs are made of."""

    report: dict[str, Any]
    fields: np.ndarray  # [n, C, H, W] physical reconstructions
    truth: np.ndarray
    masks: np.ndarray  # [n, C, H, W] bool
    pde: pdes.PDE


def make_method(name: str, zeta_obs: float | None, zeta_pde: float | None) -> tuple[Method, bool]:
    """(method with the given weights, whether any weight is left to tune)."""
    if name not in METHODS:
        raise UnknownNameError(f"unknown reconstruction method {name!r}", f"use one of: {', '.join(METHODS)}")
    if name == "projection":
        if zeta_obs is not None:
            raise ConfigError(
                "--zeta-obs given with --method projection", "projection imposes observations exactly"
            )
        return Projection(zeta_pde=zeta_pde or 0.0), zeta_pde is None
    return Guidance(zeta_obs=zeta_obs or 1.0, zeta_pde=zeta_pde or 0.0), zeta_obs is None or zeta_pde is None


def run_reconstruction(
    spec: str | os.PathLike,
    data: str | os.PathLike,
    observe: str,
    *,
    n: int = 64,
    steps: int = 20,
    seed: int = 0,
    method: str = "guidance",
    zeta_obs: float | None = None,
    zeta_pde: float | None = None,
    tune_cases: int = 8,
    batch_size: int = 16,
    device: str | None = None,
    progress: bool = True,
) -> Reconstruction:
    """Reconstruct samples 0 .. n-1 of ``data`` from the observations ``observe`` with the model
    SPEC as prior (module docstring); weights not given are tuned on ``tune_cases`` further samples."""
    check_sampling(n, steps, batch_size, "heun", seed)
    if tune_cases < 1:
        raise ConfigError(f"tune_cases = {tune_cases}", "tune on at least 1 case (default 8)")
    where = resolve_device(device)
    t0 = time.perf_counter()
    loaded = load_model(spec)
    refuse_physics_guided(loaded.record, "a reconstruction")
    loaded.module.to(where)
    pde, resolution = loaded.pde, loaded.resolution
    plan = ObservationPlan.parse(observe, pde)
    chosen, open_weights = make_method(method, zeta_obs, zeta_pde)
    needed = n + (tune_cases if open_weights else 0)
    info = check_data_file(Path(data), pde, resolution, "data", "--data")
    if info.n < needed:
        raise DataFileError(
            f"{data} holds {info.n} samples; {n} cases"
            + (f" and {tune_cases} tuning cases" if open_weights else "")
            + f" need {needed}",
            f"pass a larger file (pirf data generate {pde.name} --n {needed} --seed 1 --out FILE), "
            "a smaller --n, or the weights (--zeta-obs, --zeta-pde) so that nothing is tuned",
        )
    every = read_fields(data, 0, needed)
    truth = np.ascontiguousarray(every[:n])
    problem = Problem(
        loaded, pde, loaded.normalization, sigma_grid(loaded.module, steps), steps, seed, batch_size, where
    )
    trials: list[dict[str, Any]] = []
    if open_weights:
        tuning = np.ascontiguousarray(every[n:needed])
        chosen, trials = tune(problem, chosen, plan, tuning, n, progress)
    masks = plan.masks(seed, range(n), (resolution, resolution))
    outcome = reconstruct_cases(problem, chosen, truth, masks, list(range(n)), progress)
    report = _report(loaded, plan, chosen, trials, outcome, truth, data, n, steps, seed, tune_cases)
    report["seconds"] = time.perf_counter() - t0
    return Reconstruction(jsonable(report), outcome.fields, truth, masks, pde)


def _report(
    loaded: LoadedModel,
    plan: ObservationPlan,
    method: Method,
    trials: list[dict[str, Any]],
    outcome: Outcome,
    truth: np.ndarray,
    data: str | os.PathLike,
    n: int,
    steps: int,
    seed: int,
    tune_cases: int,
) -> dict[str, Any]:
    pde = loaded.pde
    errors = channel_errors(pde, outcome.fields, truth)
    residual = residual_summary(pde, outcome.fields)
    return {
        "pirf_version": pirf.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {
            "path": str(loaded.path),
            "pde": pde.name,
            "kind": loaded.kind,
            "sha256": loaded.record.get("sha256"),
        },
        "data": str(data),
        "observe": plan.describe(),
        "settings": {"n": n, "steps": steps, "seed": seed, "sampler": "heun"},
        "method": {"name": method.name, **method.settings()},
        "tuning": {"cases": f"samples {n} .. {n + tune_cases - 1} of the data file", "trials": trials}
        if trials
        else {"cases": None, "note": "weights given, nothing tuned"},
        "errors": {
            name: {
                "metric": error_metric(pde, name),
                "observed_fraction": fraction,
                "mean": float(np.mean(errors[name])),
                "median": float(np.median(errors[name])),
                "per_case": errors[name].tolist(),
            }
            for name, fraction in zip(plan.fields, plan.fractions, strict=True)
        },
        "residual": residual,
        "ratio_to_floor": relative_to_floor(residual, loaded.floor, "median_mse") if loaded.floor else {},
        "cost": {
            "network_calls_per_case": outcome.network_calls,
            "gradient_calls_per_case": outcome.gradient_calls,
            "seconds": outcome.seconds,
        },
    }


__all__ = ["ZETA_OBS_GRID", "ZETA_PDE_GRID", "Reconstruction", "channel_errors", "run_reconstruction"]
