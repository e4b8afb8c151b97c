"""The `pirf` application: its command classes, shared options, plug-ins and entry point.

Exit codes: 0 success, 1 a check that ran and failed (``pirf data check``), 2 a usage error or
any `PirfError` (the message says what was wrong and what to do; no traceback).

Start-up stays fast: the command modules import no torch, diffusers or h5py; each command imports
what it computes with, so ``pirf --help``, argument errors, ``pirf pdes`` and ``pirf data info``
never load torch (tests/test_cli_startup.py keeps it so; benchmarks/startup_time.py times them).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from pirf.errors import ConfigError, PirfError
from pirf.pdes.plugins import load_plugin

T = TypeVar("T")


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

COMPUTING_VERBS = frozenset({"sample", "evaluate", "reconstruct", "finetune", "demo", "bench", "pretrain"})
"""The verbs that load torch, diffusers and a model before their first line (seconds)."""

_starting: list[Any] = []  # the start-up spinner of a computing verb, while it is shown


def show_starting(verb: str) -> None:
    """Show a spinner while a computing verb loads torch, diffusers and its model, so that the
    user does not look at a still terminal for the seconds before its first line (measured by
    benchmarks/silent_phases.py). `use_cpu_threads` and the exit take it down; on a terminal only,
    and only in the first process of a multi-process launch (accelerate / torchrun set ``RANK``)."""
    import os

    first = os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"
    if console.is_terminal and first and not _starting:
        status = console.status(f"[dim]pirf {verb}: loading torch, diffusers and the model[/dim]")
        status.start()
        _starting.append(status)


def stop_starting() -> None:
    """Take the start-up spinner down (before the verb's first line, an error, or the exit)."""
    while _starting:
        _starting.pop().stop()


@app.callback()
def _global_options(
    ctx: typer.Context,
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin", metavar="MODULE", help="import a module or .py file first (registers your own PDEs)"
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="CPU threads to compute with (default: chosen by the machine's load; "
            "also PIRF_THREADS or OMP_NUM_THREADS)",
        ),
    ] = None,
) -> None:
    from pirf.threads import request_threads

    request_threads(threads)
    for spec in plugin or []:
        load_plugin(spec)
    if ctx.invoked_subcommand in COMPUTING_VERBS:
        show_starting(ctx.invoked_subcommand)


err_console = Console(stderr=True)


def use_cpu_threads() -> None:
    """Set the thread count a computing command uses (`pirf.threads`) and say it on stdout, with
    the command's other progress lines (stderr holds errors only: an error is its first line)."""
    from pirf.threads import use_threads

    choice = use_threads()
    stop_starting()
    console.print(f"[dim]{escape(choice.describe())}[/dim]", highlight=False, soft_wrap=True)


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


OverrideOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-p", metavar="KEY=VALUE", help="override a config key (same as a bare KEY=VALUE)"),
]


def overrides_of(*groups: list[str] | None) -> list[str]:
    """The config overrides of a command, bare ``KEY=VALUE`` arguments and ``-p KEY=VALUE`` options
    alike, in the order given: every verb with a config takes both (one override syntax)."""
    return [item for group in groups for item in group or []]


OverrideArguments = Annotated[
    list[str] | None,
    typer.Argument(metavar="KEY=VALUE...", help="setting overrides key=value (e.g. n=32 steps=40)"),
]
ShowOption = Annotated[bool, typer.Option(help="print the resolved settings and exit")]


def print_settings(cfg: Any) -> None:
    """Print a config as the YAML `load_config` reads back, as written: not re-wrapped to the
    terminal's width (a long line broken by the console would no longer be the YAML)."""
    from pirf.config import dump_yaml

    console.print(dump_yaml(cfg), highlight=False, markup=False, soft_wrap=True)


def verb_settings(cls: type[T], flags: Mapping[str, Any], overrides: list[str], show: bool) -> T | None:
    """A verb's settings (a config dataclass): its defaults < the flags given (``flags``, None
    values left out) < ``KEY=VALUE`` overrides. With ``show``, print them as YAML and return None."""
    from pirf.config import load_config

    given = {key: value for key, value in flags.items() if value is not None}
    cfg = load_config(cls, None, overrides, base=given)
    if show:
        print_settings(cfg)
        return None
    return cfg


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


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `pirf` console script: `PirfError` -> message on stderr, exit 2; so is
    an error of the file system the user can fix (no space, read-only, permissions), with its path.

    Ctrl-C exits with 130 (typer's convention); writers remove their temporary files on the way.
    """
    try:
        app(args=argv, prog_name="pirf")
    except KeyboardInterrupt:  # one that lands outside typer's own handler (its setup or teardown)
        sys.exit(130)
    except PirfError as err:
        _fail(err)
    except Exception as err:  # a full disk, a read-only mount, a folder not the user's: say so
        from pirf.files import file_system_error

        mapped = file_system_error(err)
        if mapped is None:
            raise
        _fail(mapped)
    finally:
        stop_starting()


def _fail(err: PirfError) -> NoReturn:
    """Print ``err`` (problem and fix) on stderr and exit 2."""
    stop_starting()
    err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)  # no markup from input
    sys.exit(2)
