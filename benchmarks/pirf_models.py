"""Ship a PIRF fine-tune as the zoo entry ``NAME-pirf`` and write its card.

    pirf finetune darcy truncation.mode=sigma 'sampler.steps_choices=[10,20,40,80]' out=runs/finetune/X
    python benchmarks/pirf_models.py darcy runs/finetune/X     # ~5 min on 2 cores (Darcy)
    python benchmarks/pirf_models.py darcy runs/finetune/X --card-only   # the card from the recorded results

Copies the run's selected model (``RUN/model.safetensors``: weights and record, the base model's
PDE, normalization and data provenance under the fine-tune's config) to
``src/pirf/zoo/NAME-pirf/`` (``pirf sample NAME-pirf``, ``pirf export NAME-pirf DIR``), then
scores the base ``NAME`` and the fine-tune from the same seeds at every step count of
``--steps`` (default 10 20 40 80; Heun; ``--n`` samples, default 128) with `pirf evaluate`'s
scoring: median residual MSE over the data floor per region, and the fidelity score against
freshly solved held-out data. The card (``CARD.md``) holds that table, the fine-tune's settings
that differ from ``pirf finetune NAME``'s defaults (the command that retrains it), its model
selection, and the training time. Results also go to ``benchmarks/results/pirf_models.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from pirf.config import to_dict
from pirf.config.resume import flat
from pirf.evaluation.guard import judge, worst_channel
from pirf.evaluation.markdown import markdown_table
from pirf.evaluation.metrics import channel_terms
from pirf.evaluation.runner import evaluate
from pirf.finetune.config import resolve_finetune_config, with_model_defaults
from pirf.models.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "src" / "pirf" / "zoo"
RESULTS = ROOT / "benchmarks" / "results" / "pirf_models.json"
RUN_ONLY = {"out", "base"}  # where the run went and what it started from: not settings


def ship(name: str, run: Path) -> Path:
    """The run's selected model as zoo/<name>-pirf/model: its selected weights (the ``ema.``
    tensors every loader reads; the run's file also keeps the last training weights, which the
    zoo leaves out) and its record without checksum and format."""
    tensors, record = load_checkpoint(run / "model")
    tensors = {k: v for k, v in tensors.items() if k.startswith("ema.")}
    drop = ("sha256", "format", "format_version", "pirf_version")
    record = {k: v for k, v in record.items() if k not in drop}
    return save_checkpoint(ZOO / f"{name}-pirf" / "model", tensors, record)


def overrides(name: str, config: dict[str, Any]) -> list[str]:
    """The run's settings that differ from ``pirf finetune NAME``'s, as ``key=value`` overrides."""
    default = flat(to_dict(with_model_defaults(resolve_finetune_config(name, config["method"], None, []))))
    mine = flat(config)
    changed = [k for k in mine if k not in RUN_ONLY and mine[k] != default.get(k)]
    return [f"{k}={json.dumps(mine[k]) if not isinstance(mine[k], str) else mine[k]}" for k in changed]


def judged(run: dict[str, Any]) -> dict[str, Any]:
    """One `pirf evaluate` run as the fidelity guard reads it: the composite score and every
    channel's terms."""
    report = run["fidelity"]
    return {"fidelity": report["fidelity_score"], "channels": channel_terms(report)}


def guard_cells(base_run: dict[str, Any], tuned_run: dict[str, Any]) -> tuple[str, str]:
    """The guard's verdict on the fine-tune against the base at one step count (default
    tolerances, `pirf.evaluation.guard`), and the channel term nearest its limit."""
    verdict = judge(judged(tuned_run), judged(base_run))
    worst = worst_channel(judged(tuned_run), judged(base_run))
    text = "admissible" if verdict.ok else "refused: " + ", ".join(f"{c} {t}" for c, t in verdict.failed)
    return text, worst.short() if worst else ""


def rows(base: dict[str, Any], tuned: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per step count: residual over the floor (all pixels, interior) and fidelity, base
    beside fine-tune, the factor, and the per-channel guard's verdict with the worst channel."""
    floor = base["floor"]
    out = []
    for b, t in zip(base["runs"], tuned["runs"], strict=True):
        ratio = {
            who: {r: run["residual"][r]["median_mse"] / floor[r]["median_mse"] for r in ("all", "interior")}
            for who, run in (("base", b), ("pirf", t))
        }
        out.append(
            (
                str(b["steps"]),
                f"{ratio['base']['all']:.3g}",
                f"{ratio['pirf']['all']:.3g}",
                f"{ratio['base']['interior']:.3g}",
                f"{ratio['pirf']['interior']:.3g}",
                f"{ratio['base']['all'] / ratio['pirf']['all']:.1f}x",
                f"{b['fidelity']['fidelity_score']:.3g}",
                f"{t['fidelity']['fidelity_score']:.3g}",
                *guard_cells(b, t),
            )
        )
    return out


def card(name: str, record: dict[str, Any], base: dict[str, Any], tuned: dict[str, Any], n: int) -> str:
    """CARD.md of NAME-pirf."""
    config = record["config"]
    changed = overrides(name, config)
    command = shlex.join(["pirf", "finetune", name, *changed])
    selection = record.get("selection", {}).get("chosen", {})
    steps = " ".join(f"--steps {r['steps']}" for r in tuned["runs"])
    headers = (
        "steps",
        "base all/floor",
        "PIRF all/floor",
        "base interior/floor",
        "PIRF interior/floor",
        "lower by",
        "base fidelity",
        "PIRF fidelity",
        "guard (per channel)",
        "worst channel term",
    )
    window = config["truncation"]
    window_text = (
        f"steps starting at sigma <= {window['sigma']:g}"
        if window.get("mode") == "sigma"
        else f"the last {window['k']} steps"
    )
    choices = config["sampler"].get("steps_choices")
    trained_at = (
        f"a step count drawn per iteration from {choices}"
        if choices
        else f"{config['sampler']['steps']} steps"
    )
    return "\n".join(
        [
            f"# Fine-tuned model: {name}-pirf",
            "",
            f"The shipped `{name}` base model fine-tuned with PIRF (reward -||R(x0)||^2, the PDE residual), "
            f"sampled deterministically with Heun at {trained_at}, gradients through {window_text}, "
            f"layers `{config['layers']}`. Weights: {selection.get('weights', '?')} "
            f"(alpha {selection.get('alpha', '?')} toward the fine-tune), chosen on held-out seeds "
            "under the fidelity guard.",
            "",
            f"- Retrain: `{command}` ({config['iterations']} iterations of {config['batch_size']} "
            f"trajectories, {record.get('train_seconds', 0) / 60:.0f} min on 2 CPU cores, wall time)",
            f"- Use: `pirf sample {name}-pirf --n 16 --steps 20`; from Python "
            f'`load_model("{name}-pirf")`; without pirf: `pirf export {name}-pirf DIR` (docs/export.md)',
            "",
            f"## Base and fine-tune from the same seeds (`pirf evaluate`, {n} samples, seed 0)",
            "",
            f"Command: `pirf evaluate {name}-pirf --n {n} {steps}` (and the same for `{name}`)",
            "",
            markdown_table(headers, rows(base, tuned)),
            "",
            "Residual: median MSE over the data floor (the training data's own residual) per region; "
            "fidelity: pirf's score against freshly solved held-out data (0 = the data; lower is better); "
            "guard: the fidelity guard of `pirf.evaluation.guard` (composite within 20% of the base's, "
            "each channel's spectrum, std and amplitude errors within max(1.2x the base's, the base's + "
            "0.1 dex / 0.05)); worst channel term: the one nearest its limit, base -> fine-tune.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", help="the benchmark: darcy, poisson, ...")
    parser.add_argument("run", type=Path, help="the fine-tuning run folder")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40, 80])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument(
        "--card-only", action="store_true", help="rewrite the card from the recorded evaluation (no sampling)"
    )
    args = parser.parse_args()
    if args.card_only:
        recorded = json.loads(RESULTS.read_text())[f"{args.name}-pirf"]
        path = ZOO / f"{args.name}-pirf" / "model.safetensors"
        record = load_checkpoint(path)[1]
        n = recorded["pirf"]["runs"][0]["n"]
        (ZOO / f"{args.name}-pirf" / "CARD.md").write_text(
            card(args.name, record, recorded["base"], recorded["pirf"], n)
        )
        print(f"{args.name}-pirf: card rewritten from {RESULTS.name}")
        return
    path = ship(args.name, args.run)
    record = load_checkpoint(path)[1]
    kw = {"n": args.n, "steps": args.steps, "seed": 0, "progress": False}
    base = evaluate(args.name, **kw)
    tuned = evaluate(f"{args.name}-pirf", **kw)
    (ZOO / f"{args.name}-pirf" / "CARD.md").write_text(card(args.name, record, base, tuned, args.n))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[f"{args.name}-pirf"] = {"run": str(args.run), "base": base, "pirf": tuned}
    RESULTS.write_text(json.dumps(results, indent=1))
    print(f"{args.name}-pirf: shipped {path} ({path.stat().st_size / 1e6:.1f} MB), card written")


if __name__ == "__main__":
    main()
