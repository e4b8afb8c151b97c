"""Build a denoiser from a JSON-able description, and load one from a checkpoint."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from pirf.errors import ConfigError, DataFileError
from pirf.models.backbone import UNetBackbone, UNetConfig
from pirf.models.checkpoint import load_checkpoint, load_into
from pirf.models.denoiser import SIGMA_MAX, Denoiser, FlowDenoiser
from pirf.pdes import ConditioningField

ModelKind = Literal["edm", "flow"]
FIRST_CONV = "backbone.unet.conv_in.weight"  # the U-Net's first convolution, which reads every input
MODEL_KINDS = ("edm", "flow")


def build_denoiser(
    kind: ModelKind,
    unet: UNetConfig,
    sigma_data: float,
    conditioning: Sequence[ConditioningField] = (),
    sigma_max: float = SIGMA_MAX,
) -> Denoiser | FlowDenoiser:
    """An EDM denoiser (``"edm"``) or a rectified-flow model behind the same call (``"flow"``).

    ``conditioning``: the PDE's fixed input fields (`pirf.pdes.PDE.conditioning`); the U-Net is
    built with one extra input channel each and holds their values.
    """
    if kind not in MODEL_KINDS:
        raise ConfigError(f"unknown model kind {kind!r}", f"use one of: {', '.join(MODEL_KINDS)}")
    if unet.guide_channels and kind != "edm":
        raise ConfigError(
            f"a {kind} model with a physics guide path (guide_channels = {unet.guide_channels})",
            "PG-Diffusion's guide applies to EDM models only: use kind 'edm', or no physics guide",
        )
    unet = dataclasses.replace(unet, condition_channels=len(conditioning))
    backbone = UNetBackbone(unet)
    if conditioning:
        backbone.set_condition(torch.from_numpy(np.stack([f.values for f in conditioning])))
    backbone.condition_names = tuple(f.name for f in conditioning)
    backbone.condition_formulas = tuple(f.formula for f in conditioning)
    wrapper = Denoiser if kind == "edm" else FlowDenoiser
    return wrapper(backbone, sigma_data, sigma_max=sigma_max)


def describe(model: Denoiser | FlowDenoiser) -> dict[str, Any]:
    """The record `build_denoiser` needs to rebuild ``model`` (stored in checkpoints); with
    conditioning fields, their names and formulas (the values travel in the weights)."""
    kind = "edm" if isinstance(model, Denoiser) else "flow"
    backbone = model.backbone
    unet = dataclasses.asdict(backbone.config)
    described = {"kind": kind, "sigma_data": model.sigma_data, "sigma_max": model.sigma_max, "unet": unet}
    names = backbone.condition_names
    if names:
        formulas = backbone.condition_formulas
        described["conditioning"] = [{"name": n, "formula": f} for n, f in zip(names, formulas, strict=True)]
    return described


def with_guide_path(model: Denoiser) -> Denoiser:
    """PG-Diffusion's network warm-started from an EDM ``model`` without a guide path.

    Every parameter and buffer the two share takes ``model``'s value; the U-Net's first
    convolution takes ``model``'s kernel on its first C + K input channels (the fields and the
    conditioning) and keeps its fresh (PyTorch default) initialization on the C new ones, which
    read the guide's embedding (`GuideEmbedding`, last convolution zero). The embedding is 0 for
    every g, so the new model is ``model`` until training moves it, and the path can learn: the
    embedding's last convolution gets the nonzero gradient W_new^T delta GELU(conv1x1(g)). (Zeroing
    the new columns as well would make both factors zero and the path dead, as in PIRF's code.)
    Fresh parameters are drawn from torch's global generator (seed it first). A model that has a
    guide path already is returned unchanged.
    """
    if model.backbone.config.guide_channels:
        return model
    if not isinstance(model, Denoiser):
        raise ConfigError("a physics guide path for a flow model", "PG-Diffusion applies to EDM models only")
    unet = dataclasses.replace(model.backbone.config, guide_channels=model.channels)
    fresh = from_description(describe(model) | {"unet": dataclasses.asdict(unet)})
    own, base = fresh.state_dict(), model.state_dict()
    for name, value in base.items():
        if name == FIRST_CONV:  # [out, C + K + C, 3, 3] here, [out, C + K, 3, 3] in the base
            own[name][:, : value.shape[1]] = value
        else:
            own[name] = value.clone()
    fresh.load_state_dict(own)
    return fresh.to(next(model.parameters()).device)


def _conditioning_placeholders(record: dict[str, Any], resolution: int) -> tuple[ConditioningField, ...]:
    """The record's conditioning fields with zero values (the checkpoint's weights fill them)."""
    entries = record.get("conditioning", [])
    zeros = np.zeros((resolution, resolution), np.float32)
    return tuple(ConditioningField(str(e["name"]), str(e["formula"]), zeros) for e in entries)


def check_conditioning(
    model: Denoiser | FlowDenoiser, expected: Sequence[ConditioningField], path: Any
) -> None:
    """Refuse a model whose conditioning fields (names and values) differ from ``expected`` (the
    PDE's own at the model's resolution): the network would be told a wrong position. A model
    trained without conditioning (``model.conditioning: false``, or before pirf had it) passes."""
    backbone = model.backbone
    names = backbone.condition_names
    if not names:
        return
    if names != tuple(f.name for f in expected):
        raise DataFileError(
            f"{path}: the model was trained with conditioning fields {list(names)}, but its PDE declares "
            f"{[f.name for f in expected]}",
            "load it with the PDE (and plug-in version) it was trained with, or retrain it",
        )
    if expected:  # the names agree, so the counts do
        values = torch.from_numpy(np.stack([f.values for f in expected]))
        if not torch.allclose(backbone.condition.float(), values, atol=1e-5):
            raise DataFileError(
                f"{path}: the values of the model's conditioning fields {list(names)} are not its PDE's",
                "load it with the PDE (and plug-in version) it was trained with, or retrain it",
            )


def from_description(record: dict[str, Any]) -> Denoiser | FlowDenoiser:
    try:
        unet = UNetConfig.from_dict(record["unet"])
        placeholders = _conditioning_placeholders(record, unet.resolution)
        sigma_max = float(record.get("sigma_max", SIGMA_MAX))  # records before it: EDM's 80
        return build_denoiser(record["kind"], unet, float(record["sigma_data"]), placeholders, sigma_max)
    except (KeyError, TypeError, ValueError) as err:  # ConfigError (a ValueError) names its own fix
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"malformed model record ({err})", "use a checkpoint written by pirf") from None


def load_denoiser(
    path: str | os.PathLike, *, weights: Literal["ema", "model"] = "ema", expect: dict[str, Any] | None = None
) -> tuple[Denoiser | FlowDenoiser, dict[str, Any]]:
    """(model in eval mode, checkpoint record) of a pirf checkpoint; ``weights`` picks the EMA
    (default, what evaluation uses) or the raw training weights."""
    tensors, record = load_checkpoint(path, expect=expect)
    model = from_description(record.get("model", {}))
    prefix = f"{weights}."
    chosen = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not chosen:
        raise ConfigError(f"checkpoint {path} holds no {weights!r} weights", "use weights='model' or 'ema'")
    load_into(model, chosen, what=f"checkpoint {path} ({weights})")
    return model.eval(), record
