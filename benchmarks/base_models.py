"""Ship the base models: copy each trained run's EMA weights into the package (src/pirf/zoo/<pde>/)
and write its card (CARD.md) with the `pirf evaluate` numbers at 20 and 80 Heun steps.

    pirf pretrain darcy                              # and the other four (configs/pretrain/*.yaml)
    python benchmarks/base_models.py darcy poisson   # ~2-5 min per model on 2 cores

The evaluation draws --n samples per step count from seed 0 and compares them with a held-out
set solved fresh (seed = training seed + 10000, 256 samples) and with the training file
(memorization). Results also go to benchmarks/results/base_models.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from pirf.config import resolve_config
from pirf.evaluation.report import markdown_report, markdown_table, summary_rows
from pirf.evaluation.runner import evaluate
from pirf.models.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "src" / "pirf" / "zoo"
RESULTS = ROOT / "benchmarks" / "results"


def ship(pde: str, run: Path) -> Path:
    """The run's EMA weights and record (no optimizer, no raw weights) as zoo/<pde>/model."""
    tensors, record = load_checkpoint(run / "model")
    keep = {k: v for k, v in tensors.items() if k.startswith("ema.")}
    record = {
        k: v for k, v in record.items() if k not in ("sha256", "format", "format_version", "pirf_version")
    }
    return save_checkpoint(ZOO / pde / "model", keep, record)


def card(pde: str, report: dict, record: dict) -> str:
    cfg = yaml.safe_load(resolve_config("pretrain", pde).read_text())
    headers, rows = summary_rows(report)
    size = (ZOO / pde / "model.safetensors").stat().st_size / 1e6
    minutes = record["train_seconds"] / 60
    data = record["data"]
    return "\n".join(
        [
            f"# Base model: {pde}",
            "",
            f"An EDM denoiser (U-Net {record['model']['unet']['base_channels']} base channels, "
            f"levels {record['model']['unet']['channel_mult']}) for {pde} at "
            f"{record['resolution']}x{record['resolution']}, trained by pirf on data it solved itself. "
            f"EMA weights, {size:.1f} MB.",
            "",
            f"- Retrain: `pirf pretrain {pde}` (config `src/pirf/configs/pretrain/{pde}.yaml`; "
            f"the data set is generated first if missing)",
            f"- Data: {data['n']} samples, seed {data['seed']}, solver: {data['solver']}",
            f"- PDE parameters: `{json.dumps(record['pde_params'])}`",
            f"- Training: {record['step']} steps of batch {cfg['batch_size']}, "
            f"{minutes:.0f} min on 2 CPU cores (wall time, shared with other jobs)",
            "",
            "## `pirf evaluate` (held-out reference, seed 0)",
            "",
            f"Command: `pirf evaluate {pde} --n {report['settings']['n']} --steps 20 --steps 80 --out DIR`",
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
    parser.add_argument("pdes", nargs="+")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "pretrain")
    parser.add_argument("--n", type=int, default=128)
    args = parser.parse_args()
    results_path = RESULTS / "base_models.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for pde in args.pdes:
        path = ship(pde, args.runs / pde)
        record = load_checkpoint(path)[1]
        out = args.runs / pde / "evaluation"
        report = evaluate(pde, n=args.n, steps=[20, 80], seed=0, out=out, overwrite=True, progress=False)
        (ZOO / pde / "CARD.md").write_text(card(pde, report, record))
        results[pde] = {"record": {k: record[k] for k in ("step", "train_seconds")}, "report": report}
        results_path.write_text(json.dumps(results, indent=1))
        print(f"{pde}: shipped {path} ({path.stat().st_size / 1e6:.1f} MB), card written")


if __name__ == "__main__":
    main()
