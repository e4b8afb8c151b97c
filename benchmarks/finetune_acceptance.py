"""Acceptance of PIRF fine-tuning on the five benchmarks at the CPU default scale (issue 4).

    python benchmarks/finetune_acceptance.py                 # all five; writes results/finetune_acceptance.md
    python benchmarks/finetune_acceptance.py darcy --n 256   # one benchmark

For each benchmark this runs `pirf demo --benchmark NAME` (fine-tune the shipped base model with
the shipped config ``configs/finetune/NAME.yaml``, then sample base and fine-tuned model from the
same ``n`` seeds with 20 Heun steps and score both), and samples the base model once more from
other seeds: how far each fidelity term moves between two sample sets of the *same* model is its
sampling noise, printed beside the change so that a "+30%" on a term that moves 40% by chance is
read as such.

Targets (issue 4): median residual MSE at most 1/10 of the base model's, over all pixels and on
interior pixels; every fidelity term at most 1.2x the base model's. Issue 24 adds the channels:
the fidelity guard (`pirf.evaluation.guard`, with the shipped config's tolerances) judges each
channel's spectrum, std and amplitude errors against the base's on the same ``n`` seeds; the
tables show the worst channel's change beside the composite and the guard's verdict. Each is
reported as met or not; nothing is relaxed. Runs land in ``runs/acceptance/NAME``; ``--reuse``
keeps finished ones (a result from before issue 24 shows no channels).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from pirf.demo import fidelity_terms, run_demo
from pirf.evaluation import guard
from pirf.evaluation.guard import JUDGED, GuardTolerances, channel_changes, worst_channel
from pirf.evaluation.markdown import markdown_table
from pirf.evaluation.metrics import channel_terms
from pirf.evaluation.runner import run_evaluation
from pirf.finetune.config import resolve_finetune_config

RESULTS = Path(__file__).resolve().parent / "results"
RESIDUAL_TARGET = 10.0  # base / fine-tuned median residual MSE, all and interior pixels
FIDELITY_TOLERANCE = 0.2  # each fidelity term <= (1 + tolerance) x the base model's
BENCHMARKS = ("darcy", "poisson", "helmholtz", "burgers", "kolmogorov")  # the shipped base models


def scored(run: dict[str, Any]) -> dict[str, Any]:
    """What the fidelity guard reads of one run of an evaluation report: score and channel terms."""
    return {"fidelity": run["fidelity"]["fidelity_score"], "channels": channel_terms(run["fidelity"])}


def judge_channels(
    base: dict[str, Any], tuned: dict[str, Any], noise: dict[str, Any], tolerances: GuardTolerances
) -> dict[str, Any]:
    """The fidelity guard on base vs fine-tuned (same seeds): its verdict, the worst channel, and
    each judged channel term with its limit and its sampling noise (base seeds 0 vs 1, relative)."""
    verdict, worst = guard.judge(tuned, base, tolerances), worst_channel(tuned, base, tolerances)
    changes = channel_changes(tuned["channels"], base["channels"], tolerances)
    return {
        "guard": verdict.to_dict(),
        "worst": None if worst is None else {**vars(worst), "ratio": worst.ratio, "text": worst.short()},
        "terms": [
            {**vars(c), "met": c.value <= c.limit, "noise": noise.get(c.channel, {}).get(c.term, math.nan)}
            for c in changes
        ],
        "tolerances": tolerances.to_dict(),
    }


def channel_noise(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, float]]:
    """|b - a| / a per channel and judged term, of two sample sets of the same model."""
    return {
        name: {t: abs(b[name][t] - v[t]) / v[t] if v[t] > 0 else math.nan for t in JUDGED}
        for name, v in a.items()
    }


def judge(comparison: dict[str, Any], noise: dict[str, float]) -> dict[str, Any]:
    """Which targets a base-vs-fine-tuned comparison meets (the composite terms)."""
    reductions = {r: comparison["residual"][r]["reduction"] for r in ("all", "interior")}
    terms = {
        name: {
            "ratio": v["finetuned"] / v["base"] if v["base"] > 0 else math.inf,
            "met": v["finetuned"] <= (1 + FIDELITY_TOLERANCE) * v["base"],
            "noise": noise[name],
        }
        for name, v in comparison["fidelity"].items()
    }
    return {
        "residual": {r: {"reduction": x, "met": x >= RESIDUAL_TARGET} for r, x in reductions.items()},
        "fidelity": terms,
        "all_met": all(x >= RESIDUAL_TARGET for x in reductions.values())
        and all(t["met"] for t in terms.values()),
    }


def run_benchmark(name: str, n: int, out: Path, reuse: bool) -> dict[str, Any]:
    """Fine-tune and compare one benchmark (see the module docstring)."""
    folder = out / name
    if reuse and (folder / "acceptance.json").exists():
        return json.loads((folder / "acceptance.json").read_text())
    t0 = time.perf_counter()
    demo = run_demo(name, folder, n=n, overwrite=True)
    kw: dict[str, Any] = {"n": n, "steps": [demo["settings"]["steps"]], "progress": True}
    base_a = run_evaluation(name, seed=0, **kw).report
    base_b = run_evaluation(name, seed=1, **kw).report
    tuned = run_evaluation(folder / "finetune" / "model.safetensors", seed=0, **kw).report
    a, b = fidelity_terms(base_a["runs"][0]), fidelity_terms(base_b["runs"][0])
    noise = {k: abs(b[k] - a[k]) / a[k] if a[k] > 0 else math.nan for k in a}
    base, other = scored(base_a["runs"][0]), scored(base_b["runs"][0])
    tolerances = GuardTolerances.of(resolve_finetune_config(name, "pirf").regularization)
    result = {
        "benchmark": name,
        "n": n,
        "demo": demo,
        "noise": noise,
        "verdict": judge(demo["comparison"], noise),
        "channels": judge_channels(
            base,
            scored(tuned["runs"][0]),
            channel_noise(base["channels"], other["channels"]),
            tolerances,
        ),
        "seconds": time.perf_counter() - t0,
    }
    result["verdict"]["all_met"] = result["verdict"]["all_met"] and result["channels"]["guard"]["admissible"]
    (folder / "acceptance.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    """Three tables: residual per region; the composite fidelity terms with their sampling noise;
    each channel's judged terms with the guard's limits (and the worst channel beside the score)."""
    res_rows, fid_rows, channel_rows = [], [], []
    for r in results:
        c, v, ft = r["demo"]["comparison"], r["verdict"], r["demo"]["finetune"]
        chosen = ft["selected"]["chosen"]
        ch = r.get("channels")
        res_rows.append(
            [
                r["benchmark"],
                str(r["n"]),
                f"{ft['iterations']} its, {ft['seconds'] / 60:.0f} min; "
                f"kept {chosen['weights']}, alpha {chosen['alpha']}",
                *(
                    f"{c['residual'][g]['base']:.3g} → {c['residual'][g]['finetuned']:.3g} "
                    f"({c['residual'][g]['reduction']:.1f}x) / {c['residual'][g]['floor']:.2g}"
                    for g in ("all", "interior")
                ),
                "yes" if all(x["met"] for x in v["residual"].values()) else "no",
                "{base:.3g} → {finetuned:.3g}".format(**c["fidelity"]["fidelity_score"]),
                ch["worst"]["text"] if ch and ch["worst"] else "—",
                _guard(ch),
            ]
        )
        for t in ch["terms"] if ch else []:
            unit = " dex" if t["term"] == "spectrum" else ""
            channel_rows.append(
                [
                    r["benchmark"],
                    t["channel"],
                    t["term"] + unit,
                    f"{t['base']:.3g}",
                    f"{t['value']:.3g}",
                    f"{t['limit']:.3g}",
                    f"{100 * t['noise']:.0f}%" if math.isfinite(t["noise"]) else "—",
                    "yes" if t["met"] else "**no**",
                ]
            )
        for term, t in v["fidelity"].items():
            f = c["fidelity"][term]
            fid_rows.append(
                [
                    r["benchmark"],
                    term,
                    f"{f['base']:.3g}",
                    f"{f['finetuned']:.3g}",
                    f"{100 * (t['ratio'] - 1):+.0f}%",
                    f"{100 * t['noise']:.0f}%",
                    "yes" if t["met"] else "no",
                ]
            )
    return "\n".join(
        [
            "# PIRF acceptance on the CPU default scale",
            "",
            "Command: `python benchmarks/finetune_acceptance.py NAME --n N` (N per row). 20 Heun steps; "
            "base and fine-tuned model sampled from the same N seeds; median per-sample residual MSE "
            "(physical units) as base → fine-tuned (reduction) / data floor.",
            "",
            markdown_table(
                [
                    "benchmark",
                    "N",
                    "fine-tune",
                    "residual, all",
                    "residual, interior",
                    f">= {RESIDUAL_TARGET:.0f}x",
                    "fidelity score",
                    "worst channel",
                    "guard per channel",
                ],
                res_rows,
            ),
            "",
            "Fidelity terms (0 = the held-out data; lower is better). *noise*: how much the term moves "
            "between two sample sets of the base model (seeds 0 and 1), relative.",
            "",
            markdown_table(
                [
                    "benchmark",
                    "term",
                    "base",
                    "fine-tuned",
                    "change",
                    "noise",
                    f"<= {1 + FIDELITY_TOLERANCE:.1f}x base",
                ],
                fid_rows,
            ),
            "",
            "Per channel (issue 24): each channel's spectrum error (dex), relative std and amplitude "
            "errors, base → fine-tuned on the same seeds; *limit*: max((1 + channel tolerance) x base, "
            "base + margin), the fidelity guard's (`pirf.evaluation.guard`, docs/finetune.md); "
            "*noise*: how much the term moves between the base model's seeds 0 and 1.",
            "",
            markdown_table(
                ["benchmark", "channel", "term", "base", "fine-tuned", "limit", "noise", "within limit"],
                channel_rows,
            ),
            "",
        ]
    )


def _guard(channels: dict[str, Any] | None) -> str:
    if not channels:
        return "—"
    verdict = channels["guard"]
    return "admitted" if verdict["admissible"] else "**refused**: " + "; ".join(verdict["failures"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="*", default=list(BENCHMARKS))
    parser.add_argument("--n", type=int, default=256, help="samples per model (default 256)")
    parser.add_argument("--out", type=Path, default=Path("runs/acceptance"))
    parser.add_argument("--reuse", action="store_true", help="keep benchmarks already finished in --out")
    args = parser.parse_args()
    store = RESULTS / "finetune_acceptance.json"
    for name in args.benchmarks:  # each result lands at once: a later failure keeps the earlier ones
        result = run_benchmark(name, args.n, args.out, args.reuse)
        done = {r["benchmark"]: r for r in json.loads(store.read_text())} if store.exists() else {}
        done[name] = result  # merged with what is there now (another run may have added to it)
        results = [done[b] for b in BENCHMARKS if b in done]
        RESULTS.mkdir(exist_ok=True)
        store.write_text(json.dumps(results, indent=1, default=float))
        (RESULTS / "finetune_acceptance.md").write_text(markdown(results))
    print((RESULTS / "finetune_acceptance.md").read_text())


if __name__ == "__main__":
    main()
