"""`pirf reconstruct`: fields from sparse observations with a model as prior."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pirf.cli.app import (
    BatchOption,
    Command,
    DeviceOption,
    OverrideArguments,
    OverrideOption,
    OverwriteOption,
    ShowOption,
    SpecArgument,
    app,
    console,
    overrides_of,
    use_cpu_threads,
    verb_settings,
)


@app.command(
    "reconstruct",
    cls=Command,
    short_help="Reconstruct fields from sparse observations (model as prior).",
)
def reconstruct_command(
    spec: SpecArgument,
    overrides: OverrideArguments = None,
    data: Annotated[
        Path | None, typer.Option(help="held-out solver data: case i reconstructs its sample i")
    ] = None,
    observe: Annotated[
        str | None,
        typer.Option(
            metavar="FIELD:FRACTION,...",
            help="observed share of each field, e.g. u:0.03 (inverse), a:1.0 (forward), a:0.03,u:0.03",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="output folder: reconstructions.h5, report.json/.md, figure")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="cases (samples 0 .. n-1 of --data)")] = 64,
    steps: Annotated[int, typer.Option(help="Heun steps")] = 20,
    seed: Annotated[
        int, typer.Option(help="seed of the masks and the noise; case i depends on (seed, i)")
    ] = 0,
    method: Annotated[
        str, typer.Option(help="guidance (DiffusionPDE: observation + residual gradients) or projection")
    ] = "guidance",
    zeta_obs: Annotated[
        float | None, typer.Option("--zeta-obs", help="guidance: observation weight (default: tuned)")
    ] = None,
    zeta_pde: Annotated[
        float | None,
        typer.Option("--zeta-pde", help="residual weight on the last 20% of steps (default: tuned)"),
    ] = None,
    tune: Annotated[
        int, typer.Option(help="cases after the first n that weights not given are tuned on")
    ] = 8,
    batch_size: BatchOption = 16,
    device: DeviceOption = None,
    overwrite: OverwriteOption = False,
    settings: OverrideOption = None,
    show: ShowOption = False,
) -> None:
    """Reconstruct held-out fields from a fraction of their pixels with a trained model as the
    prior (forward problems: the coefficient observed; inverse problems: sparse solution values),
    and score the reconstructions: relative L2 error per field (error rate for Darcy's two-phase
    a), residual against the data floor, network and gradient calls. See docs/inverse.md.
    Every flag is also a key: `pirf reconstruct darcy data=d.h5 observe=u:0.03 out=r n=16`."""
    from pirf.reconstruct import reconstruct
    from pirf.reconstruct.config import ReconstructConfig

    flags = {"data": data, "observe": observe, "out": out, "n": n, "steps": steps, "seed": seed}
    flags |= {"method": method, "zeta_obs": zeta_obs, "zeta_pde": zeta_pde, "tune": tune}
    flags |= {"batch_size": batch_size, "device": device, "overwrite": overwrite}
    cfg = verb_settings(ReconstructConfig, flags, overrides_of(overrides, settings), show)
    if cfg is None:
        return
    use_cpu_threads()
    result = reconstruct(
        spec,
        cfg.data,
        cfg.observe,
        out=cfg.out,
        overwrite=cfg.overwrite,
        n=cfg.n,
        steps=cfg.steps,
        seed=cfg.seed,
        method=cfg.method,
        zeta_obs=cfg.zeta_obs,
        zeta_pde=cfg.zeta_pde,
        tune_cases=cfg.tune,
        batch_size=cfg.batch_size,
        device=cfg.device,
    )
    report = result.report
    table = Table(title=f"reconstruction errors ({report['method']['name']}, {cfg.n} cases)")
    for col in ("field", "observed", "metric", "mean", "median"):
        table.add_column(col)
    for name, e in report["errors"].items():
        table.add_row(
            name, f"{e['observed_fraction']:.3g}", e["metric"], f"{e['mean']:.4g}", f"{e['median']:.4g}"
        )
    console.print(table)
    chosen = ", ".join(f"{k} = {v:g}" for k, v in report["method"].items() if k != "name")
    console.print(f"weights: {chosen}; results in {escape(str(cfg.out))}")
