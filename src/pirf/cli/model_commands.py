"""`pirf pretrain`, `pirf sample`, `pirf evaluate` and `pirf export`: base models and their samples."""

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
    SamplerOption,
    SeedOption,
    ShowOption,
    SpecArgument,
    app,
    console,
    err_console,
    overrides_of,
    print_settings,
    use_cpu_threads,
    verb_settings,
)


@app.command(
    "pretrain", cls=Command, short_help="Pretrain a base model (EDM or flow matching) on a data set."
)
def pretrain_command(
    config: Annotated[
        str | None,
        typer.Argument(metavar="CONFIG", help="a YAML file, or a shipped config: darcy, darcy-gpu, ..."),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(metavar="KEY=VALUE...", help="config overrides key.sub=value (e.g. steps=200)"),
    ] = None,
    settings: OverrideOption = None,
    resume: Annotated[bool, typer.Option(help="continue the run in the config's `out` folder")] = False,
    allow_change: Annotated[
        bool,
        typer.Option(
            "--allow-change", help="with --resume: accept settings other than the run's own (recorded)"
        ),
    ] = False,
    show: Annotated[bool, typer.Option(help="print the resolved config and exit")] = False,
) -> None:
    """Pretrain a base model (EDM or flow matching) on a data set; `accelerate launch` runs it on
    several GPUs. The data set is generated first when missing and `data.pde` is set."""
    from pirf.config import (
        apply_overrides,
        from_dict,
        load_config,
        read_json_config,
        resolve_config,
    )
    from pirf.training import PretrainConfig, pretrain

    if config is not None and "=" in config:  # no CONFIG, only overrides: `pirf pretrain steps=10 ...`
        config, overrides = None, [config, *(overrides or [])]
    override = overrides_of(overrides, settings)
    path = None if config is None else resolve_config("pretrain", config)
    cfg = load_config(PretrainConfig, path, override)
    if resume:
        saved = Path(cfg.out) / "config.json"
        if saved.exists():  # the run's own config, with this call's overrides (e.g. more steps)
            base = read_json_config(saved)
            cfg = from_dict(PretrainConfig, apply_overrides(base, override), where=str(saved))
    if show:
        print_settings(cfg)
        return
    use_cpu_threads()
    result = pretrain(cfg, resume=resume, allow_change=allow_change)
    console.print(
        f"trained {result.steps} steps in {result.seconds:.0f} s, final loss {result.final_loss:.4f}; "
        f"model: {escape(str(result.run_dir / 'model.safetensors'))}"
    )


@app.command("sample", cls=Command, short_help="Draw samples of a trained model into a pirf data file.")
def sample_command(
    spec: SpecArgument,
    overrides: OverrideArguments = None,
    out: Annotated[Path | None, typer.Option(help="output folder: samples.h5 and samples.png")] = None,
    n: Annotated[int, typer.Option("--n", help="number of samples")] = 16,
    steps: Annotated[int, typer.Option(help="sampler steps (Heun: 2 steps - 1 network calls)")] = 20,
    seed: SeedOption = 0,
    sampler: Annotated[
        str | None,
        typer.Option(help="heun (EDM Alg. 1; the default), euler, ddim or flow_sde; guidance picks its own"),
    ] = None,
    batch_size: BatchOption = 64,
    device: DeviceOption = None,
    overwrite: OverwriteOption = False,
    guidance: Annotated[
        str,
        typer.Option(
            help="guide by the PDE residual: none, dps (DPS on the Heun chain; needs --zeta) or value "
            "(value-guided DDIM toward p(x) exp(r(x) / alpha), r = -residual MSE)"
        ),
    ] = "none",
    guidance_mode: Annotated[
        str | None,
        typer.Option(
            "--guidance-mode",
            help="value guidance: gradient (mean += std^2 grad r / alpha; the default) or best-of "
            "(M proposals per step, the best kept; no gradient)",
        ),
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(
            help="value guidance: KL weight in reward units (r = -mean squared residual, physical "
            "units); smaller guides harder, inf is plain DDIM; needed by --guidance-mode gradient"
        ),
    ] = None,
    candidates: Annotated[
        int | None, typer.Option(help="value guidance, best-of: proposals M per step (default 4)")
    ] = None,
    zeta: Annotated[float | None, typer.Option(help="dps: step size of x -= zeta grad ||R(D(x))||_2")] = None,
    eta: Annotated[
        float | None, typer.Option(help="value guidance: DDIM noise level in (0, 1] (default 1)")
    ] = None,
    settings: OverrideOption = None,
    show: ShowOption = False,
) -> None:
    """Draw samples of a trained model and write them, in physical units, as a pirf data file
    (`pirf data check OUT/samples.h5` compares them with the model's data floor). --guidance
    steers the chain toward a lower PDE residual; its settings are recorded with the samples.
    Every flag is also a key: `pirf sample darcy out=s n=32 guidance.kind=dps guidance.zeta=0.01`."""
    from pirf.evaluation.config import SampleConfig
    from pirf.evaluation.metrics import relative_to_floor
    from pirf.evaluation.runner import sample
    from pirf.evaluation.sample_files import sample_file_residual

    flags = {"out": out, "n": n, "steps": steps, "seed": seed, "sampler": sampler}
    flags |= {"batch_size": batch_size, "device": device, "overwrite": overwrite}
    guide = {"kind": guidance, "mode": guidance_mode, "alpha": alpha, "candidates": candidates}
    flags["guidance"] = {k: v for k, v in (guide | {"zeta": zeta, "eta": eta}).items() if v is not None}
    cfg = verb_settings(SampleConfig, flags, overrides_of(overrides, settings), show)
    if cfg is None:
        return
    use_cpu_threads()
    path, drawn, record = sample(
        spec,
        cfg.out,
        n=cfg.n,
        steps=cfg.steps,
        seed=cfg.seed,
        sampler=cfg.sampler,
        batch_size=cfg.batch_size,
        device=cfg.device,
        overwrite=cfg.overwrite,
        guidance=cfg.guidance,
    )
    console.print(
        f"wrote {cfg.n} samples to {escape(str(path))} in {drawn.seconds:.1f} s "
        f"({drawn.samples_per_s:.2f} samples/s, "
        f"{drawn.nfe_per_sample} network calls per sample, {drawn.device})"
    )
    floor = record.get("data", {}).get("floor") or {}
    residual = sample_file_residual(path)  # of all n samples, accumulated as they were written
    ratios = relative_to_floor(residual, floor)
    table = Table(title="residual of the samples vs the data floor")
    for col in ("region", "median MSE", "floor median MSE", "ratio"):
        table.add_column(col)
    for part, stats in residual.items():
        ref = floor.get(part, {}).get("median_mse", float("nan"))
        table.add_row(
            part, f"{stats['median_mse']:.3e}", f"{ref:.3e}", f"{ratios.get(part, float('nan')):.3g}"
        )
    console.print(table)


@app.command("evaluate", cls=Command, short_help="Sample a trained model and score it beside the data floor.")
def evaluate_command(
    spec: SpecArgument,
    overrides: OverrideArguments = None,
    out: Annotated[
        Path | None, typer.Option(help="output folder: report.json, report.md and figures")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="samples per step count")] = 256,
    steps: Annotated[
        list[int] | None,
        typer.Option(metavar="N", help="sampler steps; repeat for several (--steps 20 --steps 80)"),
    ] = None,
    seed: SeedOption = 0,
    sampler: SamplerOption = "heun",
    reference: Annotated[
        Path | None, typer.Option(help="held-out data file (default: solve one, cached in $PIRF_CACHE)")
    ] = None,
    n_reference: Annotated[int, typer.Option(help="size of the solved reference set")] = 256,
    train: Annotated[
        Path | None,
        typer.Option(help="training data for the memorization check (default: the model's own, if here)"),
    ] = None,
    batch_size: BatchOption = 64,
    device: DeviceOption = None,
    overwrite: OverwriteOption = False,
    settings: OverrideOption = None,
    show: ShowOption = False,
) -> None:
    """Sample a trained model and score it: residual per region beside the data floor, fidelity
    to held-out data, memorization, cost; writes report.json, report.md and figures. Every flag
    is also a key: `pirf evaluate darcy out=e steps=[20,80] n=64`."""
    from pirf.evaluation.config import EvaluateConfig
    from pirf.evaluation.markdown import summary_rows
    from pirf.evaluation.runner import evaluate

    flags = {"out": out, "n": n, "steps": steps or None, "seed": seed, "sampler": sampler}
    flags |= {"reference": reference, "n_reference": n_reference, "train": train}
    flags |= {"batch_size": batch_size, "device": device, "overwrite": overwrite}
    cfg = verb_settings(EvaluateConfig, flags, overrides_of(overrides, settings), show)
    if cfg is None:
        return
    use_cpu_threads()
    report = evaluate(
        spec,
        n=cfg.n,
        steps=cfg.steps,
        seed=cfg.seed,
        sampler=cfg.sampler,
        reference=cfg.reference,
        train=cfg.train,
        n_reference=cfg.n_reference,
        batch_size=cfg.batch_size,
        device=cfg.device,
        out=cfg.out,
        overwrite=cfg.overwrite,
    )
    model = report["model"]
    headers, rows = summary_rows(report)
    table = Table(
        title=escape(f"{model['pde']} {model['resolution']}x{model['resolution']}: {model['path']}")
    )
    for col in headers:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for run in report["runs"]:
        if run["nonfinite"]:
            err_console.print(f"{run['steps']} steps: {run['nonfinite']} of {run['n']} samples are NaN/inf")
    console.print(f"memorization: {escape(report['train']['note'])}")
    console.print(f"reports and figures in {escape(str(cfg.out))} ({report['seconds']:.1f} s)")


@app.command("export", cls=Command, short_help="Write a model as a diffusers folder that loads without pirf.")
def export_command(
    spec: SpecArgument,
    out: Annotated[Path, typer.Argument(metavar="OUT", help="output folder: unet/ (diffusers), pirf.json")],
    overwrite: Annotated[bool, typer.Option(help="replace an existing folder OUT")] = False,
    show: Annotated[bool, typer.Option(help="print the pirf.json it would write and exit")] = False,
) -> None:
    """Write a model as a plain diffusers folder that loads without pirf: OUT/unet is a
    UNet2DModel (UNet2DModel.from_pretrained(OUT/unet)); OUT/pirf.json says how to sample it
    (EDM or flow, normalization, periodic axes, conditioning fields, PDE). See docs/export.md."""
    import json

    from pirf.models.export import export_description, export_model
    from pirf.models.loading import load_model

    model, record, path = load_model(spec)
    if show:
        console.print(
            json.dumps(export_description(model, record), indent=1),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return
    folder = export_model(model, record, out, overwrite=overwrite)
    console.print(f"exported {escape(str(path))} to {escape(str(folder))} (unet/, pirf.json)")
