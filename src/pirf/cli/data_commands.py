"""`pirf pdes` and `pirf data generate / info / check`: the benchmarks and their data sets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pirf.cli.app import (
    Command,
    app,
    console,
    data_app,
    err_console,
    parse_params,
    use_cpu_threads,
)


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
    use_cpu_threads()
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
    if report.outliers:
        from pirf.data.check import describe_outliers

        found = describe_outliers(list(report.outliers), report.info.pde.fields)
        err_console.print(f"{len(report.outliers)} outlier value(s): {escape(found)}", highlight=False)
    if report.ok:
        console.print("[green]ok[/green]: the samples sit at the data floor")
    else:
        err_console.print(
            f"[red]check failed[/red]: residual above {tolerance}x the floor, or non-finite or "
            "outlier samples"
        )
        raise typer.Exit(1)
