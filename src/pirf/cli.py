"""The `pirf` command: a thin layer that parses, calls the library and prints.

Exit codes: 0 success, 1 a check that ran and failed (``pirf data check``), 2 a usage error or
any `PirfError` (the message says what was wrong and what to do; no traceback).

Start-up stays fast: this module imports no torch, diffusers or h5py; each command imports
what it computes with, so ``pirf --help``, argument errors, ``pirf pdes`` and ``pirf data info``
never load torch (tests/test_cli_startup.py keeps it so; benchmarks/startup_time.py times them).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from pirf.errors import ConfigError, PirfError
from pirf.finetune.presets import PRESETS


def _no_type_label(ctx: typer.Context) -> None:
    """The type label of a flag or a repeated argument: none (typer would print ``<bool>``,
    ``<list[str]>``)."""
    return None


def _plain_labels(params: list[Any]) -> list[Any]:
    """Drop the type labels that say nothing to a user: flags and repeated arguments (their name
    or metavar says it: ``KEY=VALUE...``)."""
    for param in params:
        flag = isinstance(param, TyperOption) and param.is_flag
        repeated = isinstance(param, TyperArgument) and param.nargs != 1
        if flag or repeated:
            param.display_type_rich = _no_type_label  # type: ignore[attr-defined]
    return params


def _usage_name(param: TyperArgument) -> str:
    """An argument as the usage line shows it: ``FILE``, ``[CONFIG]``, ``[KEY=VALUE]...``."""
    name = (param.metavar or (param.name or "").upper()).removesuffix("...")
    if not param.required:
        name = f"[{name}]"
    return f"{name}..." if param.nargs != 1 else name


class Command(TyperCommand):
    """A `pirf` command whose help names things plainly: ``pirf data info [OPTIONS] FILE`` (typer
    writes ``{file}``), and no ``<bool>`` / ``<list[str]>`` labels beside flags and repeated
    arguments."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        """``[OPTIONS]`` and the arguments, named as `_usage_name` names them."""
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_usage_name(p) for p in self.get_params(ctx) if isinstance(p, TyperArgument)]

    def get_params(self, ctx: typer.Context) -> list[Any]:
        """The parameters (with ``--help``), without the uninformative type labels."""
        return _plain_labels(super().get_params(ctx))


class Group(TyperGroup):
    """A `pirf` command group (``pirf``, ``pirf data``): no ``<bool>`` label beside ``--help``."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        """The parameters (with ``--help``), without the uninformative type labels."""
        return _plain_labels(super().get_params(ctx))


app = typer.Typer(
    cls=Group,
    help="pirf: physics-informed reward fine-tuning of diffusion and flow models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    cls=Group, help="Generate, inspect and check PDE data sets (HDF5).", no_args_is_help=True
)
app.add_typer(data_app, name="data")

console = Console()


def load_plugin(spec: str) -> None:
    """Import a user's module (dotted name or ``.py`` path) so that its PDEs register."""
    try:
        if spec.endswith(".py"):
            path = Path(spec).resolve()
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None or not path.exists():
                raise FileNotFoundError(spec)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except PirfError:
        raise
    except Exception as err:  # a user's module may fail in any way: report it, don't trace it
        raise ConfigError(
            f"cannot import plugin {spec!r}: {type(err).__name__}: {err}",
            "give an importable module name or the path of a .py file",
        ) from None


@app.callback()
def _global_options(
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin", metavar="MODULE", help="import a module or .py file first (registers your own PDEs)"
        ),
    ] = None,
) -> None:
    for spec in plugin or []:
        load_plugin(spec)


err_console = Console(stderr=True)


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["nu=0.02", "re=100"]`` -> ``{"nu": 0.02, "re": 100}`` (values read as YAML scalars)."""
    import yaml

    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"parameter {item!r} is not of the form key=value", "write e.g. --param nu=0.02"
            )
        try:
            params[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"cannot read the value of {item!r}: {err}", "quote a string value: -p name='a b'"
            ) from None
    return params


@app.command("pdes", cls=Command)
def list_pdes() -> None:
    """List the registered PDE benchmarks."""
    from pirf import pdes

    table = Table(title="PDE benchmarks")
    for col in ("name", "fields", "boundary", "resolution CPU / paper"):
        table.add_column(col, no_wrap=True)
    for name in pdes.names():
        cls = pdes.get_class(name)
        res = f"{cls.default_resolution} / {cls.paper_resolution}"
        table.add_row(name, ", ".join(cls.fields), cls.boundary, res)
    console.print(table)
    for name in pdes.names():  # the equations below the table: they wrap as text, not in a cell
        console.print(f"[bold]{name}[/bold]: {escape(pdes.get_class(name).description)}", highlight=False)


@data_app.command("generate", cls=Command)
def data_generate(
    pde: Annotated[str, typer.Argument(metavar="PDE", help="PDE name (see `pirf pdes`)")],
    n: Annotated[int, typer.Option("--n", help="number of samples")] = 1000,
    resolution: Annotated[
        int | None, typer.Option(help="grid points per side (default: the PDE's CPU default)")
    ] = None,
    seed: Annotated[int, typer.Option(help="data set seed; sample i depends only on (seed, i)")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="output HDF5 file (default: <pde>_r<R>_n<N>_s<seed>.h5)")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="KEY=VALUE", help="a physical parameter; repeat for several"),
    ] = None,
    chunk: Annotated[int | None, typer.Option(help="samples solved and written per chunk")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing output file")] = False,
) -> None:
    """Solve N samples of a PDE and write them to an HDF5 data set (atomically, in chunks)."""
    from pirf import data as pirf_data
    from pirf import pdes

    instance = pdes.get(pde, **parse_params(param))
    res = instance.default_resolution if resolution is None else resolution
    out = out or Path(f"{pde}_r{res}_n{n}_s{seed}.h5")
    t0 = time.perf_counter()
    info = pirf_data.generate_dataset(
        instance, n, out, resolution=res, seed=seed, chunk=chunk, overwrite=overwrite
    )
    seconds = time.perf_counter() - t0
    console.print(
        f"wrote {info.n} samples of {pde} at {res}x{res} to {escape(str(out))} in {seconds:.1f} s "
        f"({info.n / seconds:.1f} samples/s)"
    )
    _print_floor(info.floor)


def _print_floor(floor: dict[str, dict[str, float]], title: str = "residual of the data (its floor)") -> None:
    table = Table(title=title)
    for col in ("region", "mean MSE", "median MSE", "mean MAE"):
        table.add_column(col)
    for part, s in floor.items():
        table.add_row(part, f"{s['mean_mse']:.3e}", f"{s['median_mse']:.3e}", f"{s['mean_mae']:.3e}")
    console.print(table)


@data_app.command("info", cls=Command)
def data_info(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="a pirf HDF5 data set")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Describe a data set: PDE, parameters, shape, normalization, floor, provenance."""
    from pirf import data as pirf_data

    summary = pirf_data.read_info(file).summary()
    if as_json:
        console.print_json(json.dumps(summary))
        return
    floor = summary.pop("floor")
    table = Table(title=escape(str(file)), show_header=False)
    for key, value in summary.items():
        table.add_row(key, escape(json.dumps(value) if isinstance(value, (dict, list)) else str(value)))
    console.print(table)
    if floor:
        _print_floor(floor)


@data_app.command("check", cls=Command)
def data_check(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="a pirf HDF5 data set")],
    max_samples: Annotated[int, typer.Option("--n", help="samples to score")] = 1024,
    tolerance: Annotated[float, typer.Option(help="allowed median residual / floor ratio")] = 10.0,
) -> None:
    """Score a data set's samples with the PDE residual and compare them to the data floor."""
    from pirf import data as pirf_data

    report = pirf_data.check_dataset(file, max_samples=max_samples, tolerance=tolerance)
    ratios = report.ratios()
    table = Table(title=f"{escape(str(file))}: {report.checked} samples scored; floor {report.floor_source}")
    for col in ("region", "median MSE", "floor median MSE", "ratio"):
        table.add_column(col)
    for part, s in report.residual.items():
        ref = report.floor.get(part, {}).get("median_mse", float("nan"))
        table.add_row(part, f"{s['median_mse']:.3e}", f"{ref:.3e}", f"{ratios.get(part, float('nan')):.2f}")
    console.print(table)
    if report.nonfinite:
        err_console.print(f"{len(report.nonfinite)} sample(s) contain NaN/inf: {report.nonfinite[:10]}")
    if report.ok:
        console.print("[green]ok[/green]: the samples sit at the data floor")
    else:
        err_console.print(
            f"[red]check failed[/red]: residual above {tolerance}x the floor, or non-finite samples"
        )
        raise typer.Exit(1)


@app.command(
    "pretrain", cls=Command, short_help="Pretrain a base model (EDM or flow matching) on a data set."
)
def pretrain_command(
    config: Annotated[
        str | None,
        typer.Argument(metavar="CONFIG", help="a YAML file, or a shipped config: darcy, darcy-gpu, ..."),
    ] = None,
    override: Annotated[
        list[str] | None,
        typer.Option("--set", "-p", metavar="KEY=VALUE", help="override a config key: key.sub=value"),
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in the config's `out` folder")] = False,
    show: Annotated[bool, typer.Option(help="print the resolved config and exit")] = False,
) -> None:
    """Pretrain a base model (EDM or flow matching) on a data set; `accelerate launch` runs it on
    several GPUs. The data set is generated first when missing and `data.pde` is set."""
    from pirf.config import (
        apply_overrides,
        dump_yaml,
        from_dict,
        load_config,
        read_json_config,
        resolve_config,
    )
    from pirf.training import PretrainConfig, pretrain

    path = None if config is None else resolve_config("pretrain", config)
    cfg = load_config(PretrainConfig, path, override or [])
    if resume:
        saved = Path(cfg.out) / "config.json"
        if saved.exists():  # the run's own config, with this call's overrides (e.g. more steps)
            base = read_json_config(saved)
            cfg = from_dict(PretrainConfig, apply_overrides(base, override or []), where=str(saved))
    if show:
        console.print(dump_yaml(cfg), highlight=False, markup=False)
        return
    result = pretrain(cfg, resume=resume)
    console.print(
        f"trained {result.steps} steps in {result.seconds:.0f} s, final loss {result.final_loss:.4f}; "
        f"model: {escape(str(result.run_dir / 'model.safetensors'))}"
    )


SpecArgument = Annotated[
    str,
    typer.Argument(
        metavar="MODEL",
        help="a benchmark name (its shipped model), a run folder, or a model file (.safetensors)",
    ),
]
SeedOption = Annotated[int, typer.Option(help="sampling seed; sample i depends only on (seed, i)")]
SamplerOption = Annotated[str, typer.Option(help="heun (EDM Alg. 1), euler, ddim or flow_sde")]
BatchOption = Annotated[int, typer.Option("--batch-size", help="samples per network call")]
DeviceOption = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if present)")]
OverwriteOption = Annotated[bool, typer.Option(help="replace existing results in --out")]


@app.command("sample", cls=Command, short_help="Draw samples of a trained model into a pirf data file.")
def sample_command(
    spec: SpecArgument,
    out: Annotated[Path, typer.Option(help="output folder: samples.h5 and samples.png")],
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
) -> None:
    """Draw samples of a trained model and write them, in physical units, as a pirf data file
    (`pirf data check OUT/samples.h5` compares them with the model's data floor). --guidance
    steers the chain toward a lower PDE residual; its settings are recorded with the samples."""
    from pirf.evaluation.metrics import relative_to_floor
    from pirf.evaluation.runner import sample
    from pirf.evaluation.sample_files import sample_file_residual
    from pirf.sampling.guided import GuidanceSettings

    settings = GuidanceSettings(
        kind=guidance, mode=guidance_mode, alpha=alpha, candidates=candidates, zeta=zeta, eta=eta
    )
    path, drawn, record = sample(
        spec,
        out,
        n=n,
        steps=steps,
        seed=seed,
        sampler=sampler,
        batch_size=batch_size,
        device=device,
        overwrite=overwrite,
        guidance=settings,
    )
    console.print(
        f"wrote {n} samples to {escape(str(path))} in {drawn.seconds:.1f} s "
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
    out: Annotated[Path, typer.Option(help="output folder: report.json, report.md and figures")],
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
) -> None:
    """Sample a trained model and score it: residual per region beside the data floor, fidelity
    to held-out data, memorization, cost; writes report.json, report.md and figures."""
    from pirf.evaluation.markdown import summary_rows
    from pirf.evaluation.runner import evaluate

    report = evaluate(
        spec,
        n=n,
        steps=steps or [20],
        seed=seed,
        sampler=sampler,
        reference=reference,
        train=train,
        n_reference=n_reference,
        batch_size=batch_size,
        device=device,
        out=out,
        overwrite=overwrite,
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
    console.print(f"reports and figures in {escape(str(out))} ({report['seconds']:.1f} s)")


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
    method: Annotated[
        str | None, typer.Option(help=f"{', '.join(PRESETS)} (default: pirf; docs/family.md)")
    ] = None,
    config: Annotated[str | None, typer.Option(help="a YAML config file, or a shipped config name")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in the config's `out` folder")] = False,
    show: Annotated[bool, typer.Option(help="print the resolved config and exit")] = False,
) -> None:
    """Fine-tune a base model with a reward (PIRF by default): writes OUT/model.safetensors, which
    loads wherever the base model loads, with metrics.jsonl, evals.jsonl and selection.json."""
    from pirf.config import dump_yaml
    from pirf.finetune import finetune
    from pirf.finetune.config import resolve_finetune_config

    cfg = resolve_finetune_config(base, method, config, overrides or [])
    if show:
        console.print(dump_yaml(cfg), highlight=False, markup=False)
        return
    result = finetune(cfg, resume=resume)
    chosen, base_score = result.selected["chosen"], result.selected["base"]
    console.print(
        f"{cfg.method}: {result.iterations} iterations in {result.seconds:.0f} s "
        f"({result.bad_steps} skipped non-finite steps)\n"
        f"held-out residual (median MSE): base {base_score['residual']:.3e} -> "
        f"{chosen['residual']:.3e} ({base_score['residual'] / max(chosen['residual'], 1e-300):.1f}x lower); "
        f"fidelity score {base_score['fidelity']:.3f} -> {chosen['fidelity']:.3f}\n"
        f"saved: {escape(str(result.run_dir / 'model.safetensors'))} "
        f"({chosen['weights']}, alpha {chosen['alpha']})"
    )


@app.command(
    "reconstruct",
    cls=Command,
    short_help="Reconstruct fields from sparse observations (model as prior).",
)
def reconstruct_command(
    spec: SpecArgument,
    data: Annotated[Path, typer.Option(help="held-out solver data: case i reconstructs its sample i")],
    observe: Annotated[
        str,
        typer.Option(
            metavar="FIELD:FRACTION,...",
            help="observed share of each field, e.g. u:0.03 (inverse), a:1.0 (forward), a:0.03,u:0.03",
        ),
    ],
    out: Annotated[Path, typer.Option(help="output folder: reconstructions.h5, report.json/.md, figure")],
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
) -> None:
    """Reconstruct held-out fields from a fraction of their pixels with a trained model as the
    prior (forward problems: the coefficient observed; inverse problems: sparse solution values),
    and score the reconstructions: relative L2 error per field (error rate for Darcy's two-phase
    a), residual against the data floor, network and gradient calls. See docs/inverse.md."""
    from pirf.reconstruct import reconstruct

    result = reconstruct(
        spec,
        data,
        observe,
        out=out,
        overwrite=overwrite,
        n=n,
        steps=steps,
        seed=seed,
        method=method,
        zeta_obs=zeta_obs,
        zeta_pde=zeta_pde,
        tune_cases=tune,
        batch_size=batch_size,
        device=device,
    )
    report = result.report
    table = Table(title=f"reconstruction errors ({report['method']['name']}, {n} cases)")
    for col in ("field", "observed", "metric", "mean", "median"):
        table.add_column(col)
    for name, e in report["errors"].items():
        table.add_row(
            name, f"{e['observed_fraction']:.3g}", e["metric"], f"{e['mean']:.4g}", f"{e['median']:.4g}"
        )
    console.print(table)
    chosen = ", ".join(f"{k} = {v:g}" for k, v in report["method"].items() if k != "name")
    console.print(f"weights: {chosen}; results in {escape(str(out))}")


@app.command("export", cls=Command, short_help="Write a model as a diffusers folder that loads without pirf.")
def export_command(
    spec: SpecArgument,
    out: Annotated[Path, typer.Argument(metavar="OUT", help="output folder: unet/ (diffusers), pirf.json")],
    overwrite: Annotated[bool, typer.Option(help="replace an existing folder OUT")] = False,
) -> None:
    """Write a model as a plain diffusers folder that loads without pirf: OUT/unet is a
    UNet2DModel (UNet2DModel.from_pretrained(OUT/unet)); OUT/pirf.json says how to sample it
    (EDM or flow, normalization, periodic axes, conditioning fields, PDE). See docs/export.md."""
    from pirf.models.export import export_model
    from pirf.models.loading import load_model

    model, record, path = load_model(spec)
    folder = export_model(model, record, out, overwrite=overwrite)
    console.print(f"exported {escape(str(path))} to {escape(str(folder))} (unet/, pirf.json)")


@app.command(
    "demo", cls=Command, short_help="Fine-tune a shipped model with PIRF and compare it to the base."
)
def demo_command(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(metavar="KEY=VALUE...", help="fine-tuning config overrides key.sub=value"),
    ] = None,
    benchmark: Annotated[
        str, typer.Option(help="darcy, poisson, helmholtz, burgers or kolmogorov")
    ] = "darcy",
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/demo"),
    n: Annotated[int, typer.Option("--n", help="samples per model in the comparison")] = 64,
    steps: Annotated[int, typer.Option(help="Heun steps of the comparison")] = 20,
    overwrite: Annotated[bool, typer.Option(help="replace an earlier demo in OUT")] = False,
    resume: Annotated[bool, typer.Option(help="continue an interrupted demo in OUT")] = False,
) -> None:
    """Fine-tune a shipped base model with PIRF and compare it to the base: residual per region
    beside the data floor, fidelity, figures. Minutes on a CPU."""
    from pirf.demo import run_demo

    try:
        report = run_demo(
            benchmark, out, overrides=overrides or [], n=n, steps=steps, overwrite=overwrite, resume=resume
        )
    except KeyboardInterrupt:
        again = " ".join(["pirf demo", *(overrides or []), f"--benchmark {benchmark} --out {out} --resume"])
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
    benchmarks: Annotated[
        list[str] | None,
        typer.Option(metavar="NAMES", help="benchmarks to run, comma-separated (default: all five)"),
    ] = None,
    methods: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAMES",
            help="rows to run, comma-separated: data, base, dps, cocogen, pidm, pirf, pirf-<ablation>",
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
    """The comparison table: training data, base, DPS guidance, CoCoGen, PIDM, PIRF and its
    ablations on each benchmark at 20 and 80 steps; writes table.{json,csv,md} and figures.
    With --family rsm: the reward fine-tuning methods at one budget, residual against wall time
    and trajectories (figures/family_<benchmark>.png)."""
    from pirf.bench import resolve_bench_config, run_bench
    from pirf.bench.table import headline, read_cells, with_ratios
    from pirf.config import dump_yaml

    extra = [f"out={out}"] if out is not None else []
    cfg = resolve_bench_config(
        scale,
        config,
        [*(overrides or []), *extra],
        benchmarks=_names(benchmarks),
        methods=_names(methods),
        family=family,
    )
    if show:
        console.print(dump_yaml(cfg), highlight=False, markup=False)
        return
    run_bench(cfg, resume=resume, console=console)
    cells = with_ratios(read_cells(Path(cfg.out)))
    console.print(headline(cells), highlight=False, markup=False)
    console.print(f"table.md, table.csv, table.json and figures/ in {escape(str(cfg.out))}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `pirf` console script: `PirfError` -> message on stderr, exit 2.

    Ctrl-C exits with 130 (typer's convention); writers remove their temporary files on the way.
    """
    try:
        app(args=argv, prog_name="pirf")
    except PirfError as err:
        err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)  # no markup from input
        sys.exit(2)


if __name__ == "__main__":
    main()
