"""The `pirf` command: a thin layer that parses, calls the library and prints.

`pirf.cli.app` holds the application and its entry point `main`; each ``*_command(s)`` module
registers its verbs on import, and the order of the imports below is the order of ``pirf --help``.
"""

# isort: off
from pirf.cli import data_commands  # noqa: F401
from pirf.cli import model_commands  # noqa: F401
from pirf.cli import finetune_commands  # noqa: F401
from pirf.cli import reconstruct_command  # noqa: F401

# isort: on
from pirf.cli.app import app, console, err_console, load_plugin, main, parse_params

__all__ = ["app", "console", "err_console", "load_plugin", "main", "parse_params"]
