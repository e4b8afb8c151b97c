"""Ship the base models: copy each trained run's EMA weights into the package (src/pirf/zoo/<name>/)
and write its card (CARD.md) with the `pirf evaluate` numbers at 20 and 80 Heun steps and the
targets of `benchmarks/base_targets.py` (32 samples at 20 steps against fresh held-out data).

    pirf pretrain darcy                              # and the others (configs/pretrain/*.yaml)
    python benchmarks/base_models.py darcy poisson-flow   # ~3-6 min per model on 2 cores

A name is a zoo entry: ``NAME`` (the EDM base, run folder runs/pretrain/NAME) or ``NAME-flow``
(the flow base, runs/pretrain/NAME-flow); its pretraining config is configs/pretrain/<name>.yaml.

The evaluation draws --n samples per step count from seed 0 and compares them with a held-out
set solved fresh (seed = training seed + 10000, 256 samples) and with the training file
(memorization). Results also go to benchmarks/results/base_models.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from base_targets import score as score_targets
from base_targets import table as targets_table

from pirf.config import resolve_config
from pirf.evaluation.markdown import markdown_report, markdown_table, summary_rows
from pirf.evaluation.runner import evaluate
from pirf.models.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "src" / "pirf" / "zoo"
RESULTS = ROOT / "benchmarks" / "results"


def ship(name: str, run: Path, weights: str = "ema") -> Path:
    """The run's EMA weights (or, ``weights="model"``, its final training weights) and record (no
    optimizer) as zoo/<name>/model, stored under the ``ema.`` prefix every loader reads; the
    record's ``shipped_weights`` says which they are."""
    tensors, record = load_checkpoint(run / "model")
    keep = {"ema." + k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{weights}.")}
    record = {
        k: v for k, v in record.items() if k not in ("sha256", "format", "format_version", "pirf_version")
    } | {"shipped_weights": weights}
    return save_checkpoint(ZOO / name / "model", keep, record)


KIND = {"edm": "An EDM denoiser", "flow": "A rectified-flow (flow-matching) model"}
WEIGHTS = {"ema": "EMA weights", "model": "The final training weights (scored better than the EMA)"}


def _conditioning_line(record: dict) -> str:
    fields = record["model"].get("conditioning", [])
    if not fields:
        return "- Conditioning fields: none"
    names = ", ".join(f"`{f['name']}`" for f in fields)
    return f"- Conditioning fields (fed beside the noisy fields, never generated): {names}"


def _retrain_line(name: str, cfg: dict) -> str:
    """How to retrain: one command, or two where the config continues an earlier stage's run
    (``init: runs/pretrain/STAGE``; the noise-range and flow configs do)."""
    config = f"config `src/pirf/configs/pretrain/{name}.yaml`; the data set is generated first if missing"
    init = str(cfg.get("init") or "")
    if init.startswith("runs/pretrain/"):
        stage = init.removeprefix("runs/pretrain/")
        return f"- Retrain: `pirf pretrain {stage}`, then `pirf pretrain {name}` ({config})"
    if init and "/" not in init and not init.endswith(".safetensors"):  # a zoo entry
        return f"- Retrain: `pirf pretrain {name}`, warm-started from the shipped `{init}` ({config})"
    return f"- Retrain: `pirf pretrain {name}` ({config})"


def card(name: str, report: dict, record: dict, targets: dict) -> str:
    cfg = yaml.safe_load(resolve_config("pretrain", name).read_text())
    headers, rows = summary_rows(report)
    size = (ZOO / name / "model.safetensors").stat().st_size / 1e6
    minutes = record["train_seconds"] / 60
    data, unet = record["data"], record["model"]["unet"]
    pde = record["pde"]
    return "\n".join(
        [
            f"# Base model: {name}",
            "",
            f"{KIND[record['model']['kind']]} (U-Net {unet['base_channels']} base channels, "
            f"levels {unet['channel_mult']}, attention at {unet['attention_resolutions']} and the "
            f"bottleneck) for {pde} at {record['resolution']}x{record['resolution']}, trained by pirf on "
            f"data it solved itself. {WEIGHTS[record.get('shipped_weights', 'ema')]}, {size:.1f} MB.",
            "",
            _retrain_line(name, cfg),
            f"- Data: {data['n']} samples, seed {data['seed']}, solver: {data['solver']}",
            f"- PDE parameters: `{json.dumps(record['pde_params'])}`",
            _conditioning_line(record),
            f"- Training: {record['step']} steps of batch {cfg['batch_size']}, lr {cfg['lr']} "
            f"({cfg.get('lr_schedule', 'constant')}), {minutes:.0f} min on 2 CPU cores (wall time)",
            f"- Use without pirf: `pirf export {name} DIR` (docs/export.md)",
            "",
            "## Targets (`python benchmarks/base_targets.py " + name + "`)",
            "",
            targets_table([targets]),
            "",
            "Spectrum: mean |log10 P_samples(k) / P_data(k)| over k = 1 .. R/2 (target <= 0.1); std: "
            "samples' / data's (target within 15%); fidelity: pirf's score over the score of fresh data "
            "against the same reference (target <= 2); NN ratio: memorization (>= 0.9).",
            "",
            "## `pirf evaluate` (held-out reference, seed 0)",
            "",
            f"Command: `pirf evaluate {name} --n {report['settings']['n']} --steps 20 --steps 80 --out DIR`",
            "",
            markdown_table(headers, rows),
            "",
            "Ratios are median residual MSE over the data floor per region; fidelity 0 = the data.",
            "",
            "<details><summary>full report</summary>",
            "",
            markdown_report(report),
            "",
            "</details>",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="+", help="zoo entries: darcy, poisson-flow, ...")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "pretrain")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument(
        "--weights",
        choices=("ema", "model"),
        default="ema",
        help="ship the EMA or the last weights",
    )
    args = parser.parse_args()
    results_path = RESULTS / "base_models.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.names:
        path = ship(name, args.runs / name, args.weights)
        record = load_checkpoint(path)[1]
        out = args.runs / name / "evaluation"
        report = evaluate(name, n=args.n, steps=[20, 80], seed=0, out=out, overwrite=True, progress=False)
        targets = score_targets(name, n=32, steps=20, seed=0)
        (ZOO / name / "CARD.md").write_text(card(name, report, record, targets))
        results[name] = {
            "record": {k: record[k] for k in ("step", "train_seconds")},
            "report": report,
            "targets": targets,
        }
        results_path.write_text(json.dumps(results, indent=1))
        print(f"{name}: shipped {path} ({path.stat().st_size / 1e6:.1f} MB), card written")


if __name__ == "__main__":
    main()
