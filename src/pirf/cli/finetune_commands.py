"""`pirf finetune`, `pirf demo` and `pirf bench`: reward fine-tuning and its comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pirf.cli.app import (
    Command,
    OverrideOption,
    app,
    console,
    overrides_of,
    print_settings,
    use_cpu_threads,
)
from pirf.finetune.presets import PRESETS


@app.command(
    "finetune",
    cls=Command,
    context_settings={"allow_extra_args": False},
    short_help="Fine-tune a base model with a reward (PIRF by default).",
)
def finetune_command(
    base: Annotated[
        str | None,
        typer.Argument(
            metavar="BASE", help="a benchmark with a shipped model (darcy, ...), a run folder or a model file"
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY=VALUE...", help="config overrides key.sub=value (e.g. lr=1e-4 iterations=100)"
        ),
    ] = None,
    settings: OverrideOption = None,
    method: Annotated[
        str | None, typer.Option(help=f"{', '.join(PRESETS)} (default: pirf; docs/family.md)")
    ] = None,
    config: Annotated[str | None, typer.Option(help="a YAML config file, or a shipped config name")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in the config's `out` folder")] = False,
    allow_change: Annotated[
        bool,
        typer.Option(
            "--allow-change", help="with --resume: accept settings other than the run's own (recorded)"
        ),
    ] = False,
    show: Annotated[bool, typer.Option(help="print the resolved config and exit")] = False,
) -> None:
    """Fine-tune a base model with a reward (PIRF by default): writes OUT/model.safetensors, which
    loads wherever the base model loads, with metrics.jsonl, evals.jsonl and selection.json."""
    from pirf.finetune import finetune
    from pirf.finetune.config import resolve_finetune_config

    if base is not None and "=" in base:  # no BASE, only overrides: `pirf finetune lr=1e-4 ...`
        base, overrides = None, [base, *(overrides or [])]
    cfg = resolve_finetune_config(base, method, config, overrides_of(overrides, settings))
    if show:
        print_settings(cfg)
        return
    use_cpu_threads()
    result = finetune(cfg, resume=resume, allow_change=allow_change)
    chosen, base_score = result.selected["chosen"], result.selected["base"]
    console.print(
        f"{cfg.method}: {result.iterations} iterations in {result.seconds:.0f} s "
        f"({result.bad_steps} steps skipped: non-finite or diverged)\n"
        f"held-out residual (median MSE): base {base_score['residual']:.3e} -> "
        f"{chosen['residual']:.3e} ({base_score['residual'] / max(chosen['residual'], 1e-300):.1f}x lower); "
        f"fidelity score {base_score['fidelity']:.3f} -> {chosen['fidelity']:.3f}\n"
        f"saved: {escape(str(result.run_dir / 'model.safetensors'))} "
        f"({chosen['weights']}, alpha {chosen['alpha']})"
    )


@app.command(
    "demo", cls=Command, short_help="Fine-tune a shipped model with PIRF and compare it to the base."
)
def demo_command(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(metavar="KEY=VALUE...", help="fine-tuning config overrides key.sub=value"),
    ] = None,
    settings: OverrideOption = None,
    benchmark: Annotated[
        str, typer.Option(help="darcy, poisson, helmholtz, burgers or kolmogorov")
    ] = "darcy",
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/demo"),
    n: Annotated[int, typer.Option("--n", help="samples per model in the comparison")] = 64,
    steps: Annotated[int, typer.Option(help="Heun steps of the comparison")] = 20,
    overwrite: Annotated[bool, typer.Option(help="replace an earlier demo in OUT")] = False,
    resume: Annotated[bool, typer.Option(help="continue an interrupted demo in OUT")] = False,
    show: Annotated[bool, typer.Option(help="print the resolved fine-tuning config and exit")] = False,
) -> None:
    """Fine-tune a shipped base model with PIRF and compare it to the base: residual per region
    beside the data floor, fidelity, figures. Minutes on a CPU."""
    from pirf.demo import run_demo

    given = overrides_of(overrides, settings)
    if show:
        from pirf.finetune.config import resolve_finetune_config

        cfg = resolve_finetune_config(benchmark, "pirf", None, [f"out={out / 'finetune'}", *given])
        print_settings(cfg)
        return
    use_cpu_threads()
    try:
        report = run_demo(
            benchmark, out, overrides=given, n=n, steps=steps, overwrite=overwrite, resume=resume
        )
    except KeyboardInterrupt:
        again = " ".join(["pirf demo", *given, f"--benchmark {benchmark} --out {out} --resume"])
        console.print("\ninterrupted; continue where it stopped with:")
        console.print(f"  {escape(again)}", highlight=False, soft_wrap=True)  # one line, to copy
        raise typer.Exit(130) from None
    c = report["comparison"]
    table = Table(title=f"PIRF on {benchmark}: median residual MSE at {steps} Heun steps ({n} samples)")
    for col in ("region", "data floor", "base", "PIRF", "reduction"):
        table.add_column(col)
    for region, v in c["residual"].items():
        table.add_row(
            region, f"{v['floor']:.3g}", f"{v['base']:.3g}", f"{v['finetuned']:.3g}", f"{v['reduction']:.1f}x"
        )
    console.print(table)
    fidelity = Table(title="fidelity to held-out data (lower is better)")
    for col in ("term", "base", "PIRF", "change"):
        fidelity.add_column(col)
    for name, v in c["fidelity"].items():
        fidelity.add_row(name, f"{v['base']:.3g}", f"{v['finetuned']:.3g}", f"{100 * v['change']:+.0f}%")
    console.print(fidelity)
    console.print(f"report and figures in {escape(str(out))} ({report['seconds']:.0f} s)")


def _names(values: list[str] | None) -> list[str] | None:
    """Repeated and comma-separated option values as one list (``--methods base,pirf --methods dps``)."""
    return [v for value in values for v in value.split(",") if v] if values else None


@app.command("bench", cls=Command, short_help="The comparison table: every method on every benchmark.")
def bench_command(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY=VALUE...", help="bench config overrides key.sub=value (e.g. n=64 steps=[20])"
        ),
    ] = None,
    settings: OverrideOption = None,
    benchmarks: Annotated[
        list[str] | None,
        typer.Option(metavar="NAMES", help="benchmarks to run, comma-separated (default: all five)"),
    ] = None,
    methods: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAMES",
            help="rows to run, comma-separated: data, base, dps, cocogen, pidm, pgdiffusion, pirf, "
            "pirf-<ablation>",
        ),
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(
            help="run a method family's comparison instead: rsm (PIRF, DRaFT, AlignProp, DDPO, GRPO, "
            "RWR, RSM first/zeroth order, adjoint matching; zeroth-order ones also on a black-box reward)"
        ),
    ] = None,
    scale: Annotated[str, typer.Option(help="cpu (shipped models) or gpu (paper scale)")] = "cpu",
    config: Annotated[str | None, typer.Option(help="a YAML bench config on top of the scale's")] = None,
    out: Annotated[Path | None, typer.Option(help="bench folder (default: runs/bench/<scale>)")] = None,
    resume: Annotated[
        bool, typer.Option(help="continue the bench in OUT, keeping every finished cell")
    ] = False,
    show: Annotated[bool, typer.Option(help="print the resolved config and exit")] = False,
) -> None:
    """The comparison table: training data, base, DPS guidance, CoCoGen, PIDM, PG-Diffusion, PIRF
    and its ablations on each benchmark at 20 and 80 steps; writes table.{json,csv,md} and figures.
    With --family rsm: the reward fine-tuning methods at one budget, residual against wall time
    and trajectories (figures/family_<benchmark>.png)."""
    from pirf.bench import resolve_bench_config, run_bench
    from pirf.bench.table import headline, read_cells, with_ratios

    extra = [f"out={out}"] if out is not None else []
    cfg = resolve_bench_config(
        scale,
        config,
        [*overrides_of(overrides, settings), *extra],
        benchmarks=_names(benchmarks),
        methods=_names(methods),
        family=family,
    )
    if show:
        print_settings(cfg)
        return
    use_cpu_threads()
    run_bench(cfg, resume=resume, console=console)
    cells = with_ratios(read_cells(Path(cfg.out)))
    console.print(headline(cells), highlight=False, markup=False)
    console.print(f"table.md, table.csv, table.json and figures/ in {escape(str(cfg.out))}")
