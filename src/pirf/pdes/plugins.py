"""A user's PDEs from their own module (a plug-in), remembered by what they make.

`load_plugin` imports a module by name or a ``.py`` file by path (``pirf --plugin``), which
registers its PDEs. Every data file and model record a plug-in PDE makes names where the PDE
came from (`plugin_of`: the module name and its file), and `get_recorded` -- which reading data
files and model records goes through -- loads that plug-in when the PDE is not registered yet,
so ``pirf pretrain``, ``sample``, ``evaluate`` and ``finetune`` on a plug-in's data or models
need ``--plugin`` no more (it still may be given, e.g. when the file has moved).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from pirf.errors import ConfigError, PirfError, UnknownNameError
from pirf.pdes.base import PDE
from pirf.pdes.registry import get


def load_plugin(spec: str) -> None:
    """Import a user's module (dotted name or ``.py`` path) so that its PDEs register; a file
    already imported from the same path is not run again (its PDEs are registered)."""
    try:
        if spec.endswith(".py"):
            path = Path(spec).resolve()
            loaded = sys.modules.get(path.stem)
            if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
                return
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


def plugin_of(pde: PDE) -> dict[str, str] | None:
    """Where a plug-in PDE's class comes from, ``{"module": name, "file": path}`` (None for pirf's
    own PDEs): what `get_recorded` loads to find it again."""
    name = type(pde).__module__
    if name == "pirf" or name.startswith("pirf."):
        return None
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    return {"module": name, **({"file": str(Path(file).resolve())} if file else {})}


def _load_recorded(plugin: dict[str, str]) -> None:
    """Import a recorded plug-in: its file if it is still there, else its module by name."""
    file = plugin.get("file")
    if file and Path(file).is_file():
        load_plugin(file)
    elif plugin.get("module"):
        load_plugin(plugin["module"])


def get_recorded(name: str, params: dict[str, Any], plugin: dict[str, str] | None) -> PDE:
    """`pirf.pdes.get`, loading the recorded ``plugin`` first when ``name`` is not registered."""
    try:
        return get(name, **params)
    except UnknownNameError:
        if not isinstance(plugin, dict):
            raise
    try:
        _load_recorded(plugin)
    except ConfigError as err:
        raise UnknownNameError(
            f"unknown PDE {name!r}; its plug-in {plugin} could not be loaded ({err.problem})",
            "pass the module that defines it: pirf --plugin MODULE_OR_FILE.py ...",
        ) from None
    return get(name, **params)


__all__ = ["get_recorded", "load_plugin", "plugin_of"]
