"""``pirf demo``: the whole method in minutes on a CPU.

Takes a benchmark's shipped base model, fine-tunes it with PIRF using the benchmark's shipped
fine-tuning config, then samples base and fine-tuned model from the same seeds (20 Heun steps
by default) and compares them: residual per region beside the data floor, every fidelity term,
cost. Writes ``report.md``, ``report.json``, ``samples.png`` and ``residuals.png`` in ``out``
(the fine-tuning run itself is in ``out/finetune``).
"""

from __future__ import annotations

import difflib
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pirf.errors import UnknownNameError
from pirf.evaluation.figures import plot_residuals, plot_samples, save_figure
from pirf.evaluation.markdown import markdown_table
from pirf.evaluation.report import Evaluation, check_outputs, write_json
from pirf.evaluation.runner import run_evaluation
from pirf.files import atomic_write
from pirf.finetune import finetune
from pirf.finetune.config import resolve_finetune_config
from pirf.locks import output_lock
from pirf.models.loading import zoo_names, zoo_pde

DEMO_FILES = ("report.md", "report.json", "samples.png", "residuals.png")


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan


def fidelity_terms(run: dict[str, Any]) -> dict[str, float]:
    """The fidelity score terms and the score of one run (one step count) of an evaluation report."""
    return dict(run["fidelity"]["score_terms"]) | {"fidelity_score": run["fidelity"]["fidelity_score"]}


def compare(base: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """Side by side: residual median MSE per region (and its reduction), the fidelity terms and
    score (and their relative change), cost, of two single-step-count evaluation reports."""
    rb, rt = base["runs"][0], tuned["runs"][0]
    regions = {
        region: {
            "floor": base["floor"].get(region, {}).get("median_mse", math.nan),
            "base": stats["median_mse"],
            "finetuned": rt["residual"][region]["median_mse"],
            "reduction": _ratio(stats["median_mse"], rt["residual"][region]["median_mse"]),
        }
        for region, stats in rb["residual"].items()
    }
    terms, tuned_terms = fidelity_terms(rb), fidelity_terms(rt)
    fidelity = {
        name: {"base": value, "finetuned": tuned_terms[name], "change": _ratio(tuned_terms[name], value) - 1}
        for name, value in terms.items()
    }
    return {"residual": regions, "fidelity": fidelity, "cost": {"base": rb["cost"], "finetuned": rt["cost"]}}


def markdown(report: dict[str, Any]) -> str:
    """The demo report as Markdown."""
    c, ft = report["comparison"], report["finetune"]
    rows = [
        [r, f"{v['floor']:.3g}", f"{v['base']:.3g}", f"{v['finetuned']:.3g}", f"{v['reduction']:.1f}x"]
        for r, v in c["residual"].items()
    ]
    fid = [
        [name, f"{v['base']:.3g}", f"{v['finetuned']:.3g}", f"{100 * v['change']:+.0f}%"]
        for name, v in c["fidelity"].items()
    ]
    s = report["settings"]
    return "\n".join(
        [
            f"# pirf demo: PIRF on {report['benchmark']}",
            "",
            f"Base model `{report['base']}` fine-tuned with PIRF ({ft['iterations']} iterations, "
            f"{ft['seconds']:.0f} s; selected: {ft['selected']['chosen']['weights']}, "
            f"alpha {ft['selected']['chosen']['alpha']}). Both sampled from the same {s['n']} seeds "
            f"with {s['steps']} Heun steps. Total {report['seconds']:.0f} s.",
            "",
            "## Residual (median over samples of the per-sample MSE; the data floor beside it)",
            "",
            markdown_table(["region", "data floor", "base", "PIRF", "reduction"], rows),
            "",
            "## Fidelity to held-out data (lower is better; 0 = the data)",
            "",
            markdown_table(["term", "base", "PIRF", "change"], fid),
            "",
            "Figures: `samples.png` (reference, base, PIRF), `residuals.png` (|residual| maps).",
            "",
        ]
    )


def check_benchmark(benchmark: str) -> None:
    """Refuse a benchmark without a shipped EDM base model, naming those with one (the zoo's flow
    bases and fine-tunes are not the demo's; a path to a model of your own is let through: the
    demo runs on it too)."""
    names = [name for name in zoo_names() if zoo_pde(name) == name]
    if benchmark in names or Path(benchmark).exists():
        return
    close = difflib.get_close_matches(benchmark, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownNameError(
        f"unknown benchmark {benchmark!r}: the demo runs on a shipped base model",
        f"{hint}benchmarks: {', '.join(names)}",
    )


def run_demo(
    benchmark: str = "darcy",
    out: str | Path = "runs/demo",
    *,
    overrides: Sequence[str] = (),
    n: int = 64,
    steps: int = 20,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``benchmark``'s shipped model with PIRF and compare it to the base (see module).

    ``resume`` continues an interrupted demo in ``out``: the fine-tune from its last checkpoint
    (the same numbers as an uninterrupted run), then the comparison, written anew. ``out`` is
    locked for the demo's life: a second demo into it is refused (`pirf.locks`)."""
    with output_lock(out, "a demo"):
        return _run_demo(benchmark, Path(out), overrides, n, steps, overwrite, resume, progress)


def _run_demo(
    benchmark: str,
    out: Path,
    overrides: Sequence[str],
    n: int,
    steps: int,
    overwrite: bool,
    resume: bool,
    progress: bool,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    check_benchmark(benchmark)
    cfg = resolve_finetune_config(benchmark, "pirf", None, [f"out={out / 'finetune'}", *overrides])
    resuming = resume and (out / "finetune" / "config.json").exists()
    if not resuming:
        check_outputs(out, (*DEMO_FILES, "finetune"), overwrite)
    if overwrite and not resuming and (out / "finetune").exists():
        shutil.rmtree(out / "finetune")
    result = finetune(cfg, resume=resuming, progress=progress)
    kw: dict[str, Any] = {"n": n, "steps": [steps], "seed": 0, "progress": progress}
    if progress:
        print(f"comparing base and fine-tuned: {n} samples each at {steps} Heun steps", flush=True)
    base = run_evaluation(cfg.base, **kw)
    tuned = run_evaluation(result.run_dir / "model.safetensors", **kw)
    report = {
        "benchmark": benchmark,
        "base": cfg.base,
        "settings": {"n": n, "steps": steps},
        "finetune": {
            "run": str(result.run_dir),
            "iterations": result.iterations,
            "seconds": result.seconds,
            "bad_steps": result.bad_steps,
            "selected": result.selected,
        },
        "comparison": compare(base.report, tuned.report),
        "seconds": time.perf_counter() - t0,
    }
    _write(out, report, base, tuned, steps)
    return report


def _write(out: Path, report: dict[str, Any], base: Evaluation, tuned: Evaluation, steps: int) -> None:
    blocks = [("data", base.reference), ("base", base.samples[steps]), ("PIRF", tuned.samples[steps])]
    title = f"{base.pde.name}: base and PIRF fine-tune, {steps} Heun steps"
    note = "base and PIRF columns: samples 0.. of seed 0 (the same noise); data: held-out samples 0.."
    save_figure(plot_samples(base.pde, blocks, title=title, note=note), out / "samples.png")
    save_figure(
        plot_residuals(base.pde, blocks, title=f"{title}: |PDE residual|", note=note), out / "residuals.png"
    )
    text = markdown(report)
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(text))
    write_json(out / "report.json", report)


__all__ = ["check_benchmark", "compare", "fidelity_terms", "markdown", "run_demo"]
