"""Build a denoiser from a JSON-able description, and load one from a checkpoint."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal

from pirf.errors import ConfigError
from pirf.models.backbone import UNetBackbone, UNetConfig
from pirf.models.checkpoint import load_checkpoint, load_into
from pirf.models.denoiser import Denoiser, FlowDenoiser

ModelKind = Literal["edm", "flow"]
MODEL_KINDS = ("edm", "flow")


def build_denoiser(kind: ModelKind, unet: UNetConfig, sigma_data: float) -> Denoiser | FlowDenoiser:
    """An EDM denoiser (``"edm"``) or a rectified-flow model behind the same call (``"flow"``)."""
    if kind not in MODEL_KINDS:
        raise ConfigError(f"unknown model kind {kind!r}", f"use one of: {', '.join(MODEL_KINDS)}")
    wrapper = Denoiser if kind == "edm" else FlowDenoiser
    return wrapper(UNetBackbone(unet), sigma_data)


def describe(model: Denoiser | FlowDenoiser) -> dict[str, Any]:
    """The record `build_denoiser` needs to rebuild ``model`` (stored in checkpoints)."""
    kind = "edm" if isinstance(model, Denoiser) else "flow"
    unet = dataclasses.asdict(model.backbone.config)
    return {"kind": kind, "sigma_data": model.sigma_data, "unet": unet}


def from_description(record: dict[str, Any]) -> Denoiser | FlowDenoiser:
    try:
        unet = UNetConfig.from_dict(record["unet"])
        return build_denoiser(record["kind"], unet, float(record["sigma_data"]))
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
