"""Export a pirf model as a plain diffusers folder that loads without pirf (`pirf export`).

``DIR/unet`` is the network as a diffusers `UNet2DModel` folder (``config.json`` and
``diffusion_pytorch_model.safetensors``): ``UNet2DModel.from_pretrained(DIR / "unet")`` loads it
with diffusers alone. ``DIR/pirf.json`` says everything else a pirf-free user needs to sample it
and read the samples in physical units (docs/export.md has a ~20-line sampler):

- ``kind``: ``"edm"`` -- D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) with EDM's
  preconditioning (Karras et al. 2022, Table 1) and ``sigma_data``; or ``"flow"`` -- a rectified
  flow velocity v(x_t, t), x_t = (1 - t) x0 + t eps (Liu et al. 2023), where x_t = x / (1 + sigma)
  and t = sigma / (1 + sigma) put it on the same sigma grid;
- ``normalization``: per-channel shift and scale, physical = model * scale + shift;
- ``periodic``: the axes along which every padded convolution pads circularly (the exported
  `UNet2DModel` pads with zeros: the user switches ``padding_mode`` to ``"circular"`` on those
  convolutions, exact for ``"xy"``; for ``"x"`` pirf pads circularly along x only, see docs);
- ``conditioning``: fixed input fields appended after the noisy channels, with their formulas
  and their values in ``DIR/conditioning.safetensors`` (key ``"fields"``, ``[K, R, R]``);
- ``pde`` and ``pde_params``, ``fields``, ``resolution`` and the sampler pirf uses (Heun on the
  Karras grid for EDM, on the uniform flow-time grid for flows).

A PG-Diffusion model (a U-Net with a physics guide path, `pirf.training.pgdiffusion`) is refused:
its guide embedding is a module outside the `UNet2DModel`, which such a folder cannot hold.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from pirf.errors import ConfigError, OutputExistsError
from pirf.files import default_permissions, file_system_error, pid_alive
from pirf.models.denoiser import Denoiser, FlowDenoiser

EXPORT_FORMAT = "pirf-diffusers-export"
EXPORT_VERSION = 1
PERIODIC_NOTE = {
    None: "none: zero padding everywhere, as exported",
    "x": "x: pad circularly along the last (x, width) axis and with zeros along y; see docs/export.md",
    "xy": "xy: every padded Conv2d pads circularly: conv.padding_mode = 'circular'",
}


def export_description(model: Denoiser | FlowDenoiser, record: dict[str, Any]) -> dict[str, Any]:
    """The ``pirf.json`` of an export: what a user without pirf needs beside the U-Net weights."""
    backbone = model.backbone
    kind = "edm" if isinstance(model, Denoiser) else "flow"
    norm = record["normalization"]
    description: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "kind": kind,
        "sigma_data": model.sigma_data,
        "sigma_max": model.sigma_max,
        "pde": record["pde"],
        "pde_params": record.get("pde_params", {}),
        "fields": record.get("fields", []),
        "resolution": int(record["resolution"]),
        "normalization": {
            "shift": norm["shift"],
            "scale": norm["scale"],
            "formula": "physical[:, c] = model[:, c] * scale[c] + shift[c]",
        },
        "periodic": backbone.config.periodic,
        "periodic_note": PERIODIC_NOTE[backbone.config.periodic],
        "conditioning": [
            {"name": name, "formula": formula, "channel": len(record.get("fields", [])) + i}
            for i, (name, formula) in enumerate(
                zip(backbone.condition_names, backbone.condition_formulas, strict=True)
            )
        ],
        "network_input": (
            "unet(torch.cat([x_in, conditioning fields expanded to the batch], dim=1), timestep) "
            "with x_in and timestep as below; without conditioning fields, unet(x_in, timestep)"
        ),
        "sampler": _sampler_note(kind, model.sigma_max),
        "source": {k: record.get(k) for k in ("stage", "step", "train_seconds") if k in record},
    }
    return description


def _sampler_note(kind: str, sigma_max: float) -> dict[str, Any]:
    top = f"{sigma_max:g}"
    if kind == "edm":
        denoiser = (
            "D(x, sigma) = c_skip x + c_out unet(c_in x, c_noise): c_skip = sd^2 / (sigma^2 + sd^2), "
            "c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2), "
            "c_noise = ln(sigma) / 4 (a float tensor, one per sample), sd = sigma_data"
        )
        grid = f"Karras: sigma_i = ({top}^(1/7) + i/(N-1) (0.002^(1/7) - {top}^(1/7)))^7, i < N; sigma_N = 0"
    else:
        denoiser = (
            "D(x, sigma) = x_t - t unet(x_t, t): t = sigma / (1 + sigma), x_t = x / (1 + sigma) "
            "(t a float tensor, one per sample)"
        )
        grid = (
            f"uniform in flow time: t_i = t_max (1 - i/N), t_max = {top}/(1 + {top}), "
            "sigma_i = t_i / (1 - t_i)"
        )
    return {
        "denoiser": denoiser,
        "grid": grid,
        "steps": "Heun (EDM Algorithm 1): Euler step, then the 2nd-order correction except on the last step",
        "start": "x = sigma_0 * z, z ~ N(0, I) of shape [B, len(fields), R, R]",
    }


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"{out} already exists", "pass --overwrite to replace it, or choose another DIR"
        )


def export_model(
    model: Denoiser | FlowDenoiser, record: dict[str, Any], out: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write ``model`` as ``out/unet`` (diffusers) + ``out/pirf.json`` (+ ``conditioning.safetensors``).

    The folder is built beside ``out`` under a temporary name and renamed into place, so an
    interrupted export leaves no half-written ``out``; an existing ``out`` is refused unless
    ``overwrite``.
    """
    out = Path(out)
    if model.backbone.config.guide_channels:
        raise ConfigError(
            "this is a PG-Diffusion model: its network reads a physics guide through a learned "
            "embedding, which a diffusers UNet2DModel folder cannot hold",
            "sample it with pirf (`pirf sample`), or export a model without a guide path",
        )
    _refuse_existing(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        if not pid_alive(int(stale.name.rsplit("-", 1)[-1])):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.backbone.unet.save_pretrained(tmp / "unet", safe_serialization=True)
        description = export_description(model, record)
        if description["conditioning"]:
            fields = model.backbone.condition.detach().float().contiguous().cpu()
            save_file({"fields": fields}, str(tmp / "conditioning.safetensors"))
        for weights in tmp.rglob("*.safetensors"):
            default_permissions(weights)  # safetensors writes 0600
        (tmp / "pirf.json").write_text(json.dumps(description, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except Exception as err:  # safetensors and diffusers report a full disk in their own types
        mapped = file_system_error(err, out)
        if mapped is None:
            raise
        raise mapped from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
