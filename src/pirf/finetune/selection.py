"""Evaluation and model selection of a fine-tuning run under the fidelity guard
(`pirf.evaluation.guard`): periodic scoring of the EMA weights with early stopping
(`evaluate_ema`), and the final choice among the EMA, the best weights and their interpolations
toward the base (`select_model`), written to ``model.safetensors`` and ``selection.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accelerate import Accelerator
from torch import nn

from pirf.evaluation.guard import GuardTolerances, Score
from pirf.files import append_jsonl, read_jsonl, write_json
from pirf.finetune.config import FinetuneConfig
from pirf.finetune.context import Context, score, score_state
from pirf.finetune.regularization import interpolate
from pirf.finetune.run_folder import RunState, run_record
from pirf.models.checkpoint import load_checkpoint, save_checkpoint
from pirf.training.ema import EMA
from pirf.training.state import prefixed


def evaluate_ema(
    ctx: Context,
    weights: nn.Module,
    cfg: FinetuneConfig,
    state: RunState,
    iteration: int,
    run_dir: Path,
    best_path: Path,
    accelerator: Accelerator,
) -> None:
    """Score the EMA weights on the held-out seeds; keep them if they are the best the fidelity
    guard admits. The guard's verdict (which channel and term failed) goes to ``evals.jsonl``."""
    result = score(ctx, weights, cfg)
    verdict = Score.from_mapping(result).judge(state.base_score, GuardTolerances.of(cfg.regularization))
    improved = (
        cfg.regularization.early_stopping
        and verdict.ok
        and (state.best is None or result["residual"] < state.best["residual"])
    )
    if improved:
        keep = ("residual", "fidelity", "channels")
        state.best = {"iteration": iteration, **{k: result[k] for k in keep}}
    if accelerator.is_main_process:
        line = {
            "iteration": iteration,
            "weights": "ema",
            **result,
            "guard": verdict.to_dict(),
            "best": improved,
        }
        append_jsonl(run_dir / "evals.jsonl", line)
        if improved:
            save_checkpoint(best_path, weights.state_dict(), {"stage": "finetune-best", **state.best})


def select_model(
    ctx: Context,
    cfg: FinetuneConfig,
    state: RunState,
    best_path: Path,
    ema: EMA,
    run_dir: Path,
    accelerator: Accelerator,
    progress: bool = False,
) -> dict[str, Any]:
    """Score the candidates (final EMA, early-stopping best, their interpolations toward the base)
    and write the admissible one with the lowest held-out residual as ``model.safetensors``. The
    base itself is a candidate: if nothing beats it within the fidelity guard, the base weights are
    written and the record says so. Each candidate's verdict (the channel and term that failed)
    is recorded in ``selection.json`` and, with ``progress``, printed."""
    evals = read_jsonl(run_dir / "evals.jsonl")
    final_eval = next(
        e for e in reversed(evals) if e["weights"] == "ema" and e["iteration"] == state.iteration
    )
    final = {k: v.clone() for k, v in ema.state_dict().items()}
    candidates = [("base", 0.0, interpolate(final, ctx.base, 0.0), state.base_score)]
    candidates.append(("final EMA", 1.0, final, final_eval))
    anchor, anchor_name = final, "final EMA"
    if cfg.regularization.early_stopping and state.best is not None:
        anchor, anchor_name = load_checkpoint(best_path)[0], f"best EMA (iteration {state.best['iteration']})"
        candidates.append((anchor_name, 1.0, anchor, {"finite": True, **state.best}))
    talk = progress and accelerator.is_main_process
    if talk and cfg.regularization.alphas:
        print(f"scoring {len(cfg.regularization.alphas)} interpolations toward the base", flush=True)
    for alpha in cfg.regularization.alphas:
        mixed = interpolate(anchor, ctx.base, alpha)
        candidates.append((anchor_name, alpha, mixed, score_state(ctx, mixed, cfg, progress=talk)))
    tolerances, base = GuardTolerances.of(cfg.regularization), Score.from_mapping(state.base_score)
    verdicts = [Score.from_mapping(c[3]).judge(base, tolerances) for c in candidates]
    kept = [c for c, v in zip(candidates, verdicts, strict=True) if v.ok]
    if talk:
        for (n, a, _, _), v in zip(candidates, verdicts, strict=True):
            if not v.ok:
                print(f"fidelity guard refused {n} (alpha {a:g}): {'; '.join(v.failures)}", flush=True)
    if kept:
        name, alpha, weights, result = min(kept, key=lambda c: c[3]["residual"])
    else:
        name, alpha, weights, result = (
            "base (no candidate kept the fidelity guard)",
            0.0,
            None,
            state.base_score,
        )
        weights = interpolate(anchor, ctx.base, 0.0)
    selected = {
        "chosen": _summary(name, alpha, result, base, tolerances),
        "base": {
            "residual": state.base_score["residual"],
            "fidelity": state.base_score["fidelity"],
            "channels": state.base_score.get("channels"),
        },
        "candidates": [_summary(n, a, r, base, tolerances) for n, a, _, r in candidates],
        "fidelity_tolerance": tolerances.fidelity,
        "guard": tolerances.to_dict(),
    }
    if accelerator.is_main_process:
        tensors = {**prefixed("ema", weights), **prefixed("model", ctx.model.state_dict())}
        record = run_record(cfg, ctx, state.iteration) | {
            "selection": selected,
            "bad_steps": state.bad.total,
            "train_seconds": state.seconds,
        }
        save_checkpoint(run_dir / "model", tensors, record)
        write_json(run_dir / "selection.json", selected)
    return selected


def _summary(
    name: str, alpha: float, result: dict[str, Any], base: Score, tolerances: GuardTolerances
) -> dict[str, Any]:
    """One candidate of the selection: its scores, the guard's verdict and its worst channel."""
    mine = Score.from_mapping(result)
    verdict, worst = mine.judge(base, tolerances), mine.worst_channel(base, tolerances)
    return {
        "weights": name,
        "alpha": alpha,
        "residual": result["residual"],
        "fidelity": result["fidelity"],
        "admissible": verdict.ok,
        "failures": list(verdict.failures),
        "worst_channel": worst.short() if worst is not None else None,
    }


__all__ = ["evaluate_ema", "select_model"]
