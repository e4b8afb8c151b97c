"""Finding and loading a model: the zoo of shipped models, run folders and checkpoint files.

`resolve_model` turns a command-line SPEC (a zoo entry such as ``poisson`` or ``poisson-flow``,
a run folder, a checkpoint file) into a checkpoint path; `load_model` loads it, checks its record
against its weights and returns a `LoadedModel`. Sampling, evaluation, pretraining from ``init``,
fine-tuning and the bench all load models here.
"""

from __future__ import annotations

import difflib
import os
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import torch

from pirf import pdes
from pirf.errors import DataFileError, UnknownNameError
from pirf.models.checkpoint import checkpoint_paths
from pirf.models.factory import check_conditioning, load_denoiser
from pirf.models.record import check_model_record, record_pde
from pirf.normalization import Normalization

ZOO_VARIANTS = ("-flow", "-pirf", "-flow-pirf")
"""Zoo entries beside a benchmark's EDM base ``NAME``: its flow base and the PIRF fine-tunes."""


def zoo_model(name: str) -> Path:
    """Path of the model shipped as zoo entry ``name`` (it may not exist)."""
    return Path(str(resources.files("pirf") / "zoo" / name / "model.safetensors"))


def zoo_pde(name: str) -> str | None:
    """The benchmark a zoo entry name belongs to (``poisson-flow`` -> ``poisson``), or None."""
    if name in pdes.names():
        return name
    for suffix in ZOO_VARIANTS:
        if name.endswith(suffix) and name[: -len(suffix)] in pdes.names():
            return name[: -len(suffix)]
    return None


def zoo_names() -> list[str]:
    """Every zoo entry shipped in this installation (``poisson``, ``poisson-flow``, ...)."""
    root = Path(str(resources.files("pirf") / "zoo"))
    return sorted(p.name for p in root.iterdir() if zoo_pde(p.name) and (p / "model.safetensors").is_file())


def resolve_model(spec: str | os.PathLike) -> Path:
    """The checkpoint (``.safetensors`` path) that a command-line SPEC names.

    In order: a zoo entry (``poisson``, the EDM base; ``poisson-flow``, the flow base;
    ``poisson-pirf``, the PIRF fine-tune) -> the shipped model ``pirf/zoo/<name>/model.safetensors``;
    a run folder -> its ``model.safetensors``; a checkpoint path with or without suffix -> itself.
    Write ``./poisson`` for a folder that is named like a zoo entry. Anything else is an
    `UnknownNameError` listing the zoo entries.
    """
    text = str(spec)
    if zoo_pde(text) is not None:
        path = zoo_model(text)
        if not path.is_file():
            raise DataFileError(
                f"no shipped model {text!r} in this pirf installation (shipped: {', '.join(zoo_names())})",
                f"train one with `pirf pretrain {zoo_pde(text)}`, then give its file instead of the name: "
                f"--model runs/pretrain/{text}/model.safetensors (or the run folder runs/pretrain/{text})",
            )
        return path
    path = Path(spec)
    if path.is_dir():
        weights, meta = checkpoint_paths(path / "model")
        if weights.exists() or meta.exists():
            return weights
        raise DataFileError(
            f"the folder {path} holds no model.safetensors (an unfinished run?)",
            f"finish the run (`pirf pretrain ... --resume`) or pass a checkpoint such as "
            f"{path / 'checkpoints' / 'latest.safetensors'}",
        )
    weights, meta = checkpoint_paths(path)
    if weights.exists() or meta.exists():
        return weights
    close = difflib.get_close_matches(text, zoo_names(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownNameError(
        f"{text!r} is neither a shipped model, a run folder nor a model file",
        f"{hint}shipped models: {', '.join(zoo_names())}; or give a run folder or a .safetensors file",
    )


class LoadedModel(NamedTuple):
    """A model ready to sample: the network (eval mode, its shipped weights), the checkpoint
    record it was checked against, and where it came from. Unpacks as ``model, record, path``;
    the typed views below read the record so callers need not know its keys."""

    module: torch.nn.Module
    record: dict[str, Any]
    path: Path

    @property
    def pde(self) -> pdes.PDE:
        """The PDE, with its physical parameters, the model was trained on."""
        return record_pde(self.record, self.path)

    @property
    def resolution(self) -> int:
        return int(self.record["resolution"])

    @property
    def normalization(self) -> Normalization:
        """The data normalization x_model = (x - shift) / scale of the training set."""
        return Normalization.from_dict(self.record["normalization"])

    @property
    def kind(self) -> str:
        """``edm`` or ``flow``."""
        return str(self.record["model"].get("kind", "edm"))

    @property
    def floor(self) -> dict[str, dict[str, float]]:
        """The training data's own residual statistics per region (empty if not recorded)."""
        return self.record.get("data", {}).get("floor") or {}

    @property
    def data_seed(self) -> int:
        """The seed of the training data (held-out sets are drawn from other seeds)."""
        return int(self.record.get("data", {}).get("seed") or 0)


def load_model(spec: str | os.PathLike) -> LoadedModel:
    """The model SPEC (`resolve_model`) in eval mode with its shipped weights, its record checked
    against the weights (`check_model_record`) and its conditioning fields against its PDE's."""
    path = resolve_model(spec)
    pde_name = zoo_pde(str(spec))
    expect = {"pde": pde_name} if pde_name is not None else None
    model, record = load_denoiser(path, expect=expect)
    pde = check_model_record(record, model.channels, model.resolution, path)
    check_conditioning(model, pde.conditioning(model.resolution), path)
    return LoadedModel(model, record, path)
