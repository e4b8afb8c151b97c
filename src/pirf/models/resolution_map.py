"""Where each module of a network operates, measured: spatial resolution and U-Net role.

PIRF's layer-wise truncation (Yuan et al. 2025, Sec. 4.2) fine-tunes only the decoder layers at
the full output resolution. The public code picks them by a layer-name prefix ("128x128_"),
which selects the wrong level at another resolution. Here nothing is read from names: one forward
pass with hooks on every module records

- ``resolution``: H of the module's output ``[B, C, H, W]`` (a tuple or list output counts by
  its first element). None when the output is not a 4-d tensor (time-embedding MLPs, attention
  projections on ``[B, HW, C]``), or when the module ran at several resolutions.
- ``role``, from the order of execution. Let m be the smallest resolution any module outputs.
  A call that ends before the first module that outputs m has ended belongs to the *encoder*; a
  call that starts after the last module that outputs m has ended belongs to the *decoder*; calls
  in between are *bottleneck*. A module's role is the role shared by all calls of the modules
  without children (leaves) inside it, itself included; None if they differ (the whole network,
  a down block that ends in its downsampler, an up block that starts at the bottleneck).

For diffusers' `UNet2DModel` with levels 32, 16, 8: encoder = conv_in and the down blocks above
8x8 (their downsamplers to 8x8 excluded); bottleneck = the 8x8 downsampler, the 8x8 down and up
residual blocks and the mid-block; decoder = the upsamplers and up blocks from 16x16 on, conv_out.

A parameter belongs to the innermost module that owns it and has a resolution: a residual
block's time projection goes with the block. Parameters with no such owner that has a role (the
shared time embedding, owned only by the whole network) are trained only under ``mode="all"``.

Note: a model that makes ``[B, C, 1, 1]`` tensors in modules (squeeze-excitation) would count
those as resolution 1; diffusers' U-Net does not.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from pirf.errors import ConfigError, ShapeError

Role = Literal["encoder", "bottleneck", "decoder"]
SelectMode = Literal["high-res", "inverse", "all"]
SELECT_MODES: tuple[str, ...] = ("high-res", "inverse", "all")


@dataclass(frozen=True)
class ModuleInfo:
    """Measured facts about one module: output size H (None if not spatial) and U-Net role."""

    resolution: int | None
    role: Role | None


@dataclass(frozen=True)
class _Call:
    start: int  # event numbers of the pre- and post-hook
    end: int
    size: int | None  # output H, None if not spatial


def _output_size(output: object) -> int | None:
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    return output.shape[-2] if isinstance(output, Tensor) and output.ndim == 4 else None


def _call_args(example_input: Tensor | tuple) -> tuple:
    if isinstance(example_input, tuple):
        return example_input
    x = example_input  # sigma = 1 for a denoiser, c_noise = 1 for a backbone
    return x, torch.ones(x.shape[0], dtype=x.dtype, device=x.device)


def _record_calls(model: nn.Module, example_input: Tensor | tuple) -> dict[str, list[_Call]]:
    calls: dict[str, list[_Call]] = defaultdict(list)
    starts: dict[str, list[int]] = defaultdict(list)
    clock = itertools.count()

    def pre_hook(name: str):
        return lambda module, args: starts[name].append(next(clock))

    def post_hook(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            calls[name].append(_Call(starts[name].pop(), next(clock), _output_size(output)))

        return hook

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(pre_hook(name)))
        handles.append(module.register_forward_hook(post_hook(name)))
    try:
        with torch.no_grad():
            model(*_call_args(example_input))
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _ancestors(name: str) -> list[str]:
    """The module itself and its ancestors, innermost first: a.b -> ["a.b", "a", ""]."""
    parts = name.split(".") if name else []
    return [".".join(parts[:depth]) for depth in range(len(parts), -1, -1)]


def _call_role(call: _Call, first_min_end: int, last_min_end: int) -> Role:
    if call.end < first_min_end:
        return "encoder"
    return "decoder" if call.start > last_min_end else "bottleneck"


def module_resolutions(model: nn.Module, example_input: Tensor | tuple) -> dict[str, ModuleInfo]:
    """`ModuleInfo` for every module of ``model`` (keyed as in `named_modules`, the root is "").

    Runs ``model`` once without gradient. ``example_input`` is either a tuple of arguments
    (``model(*example_input)``) or a field ``x`` ``[B, C, H, W]``, run as ``model(x, ones(B))``:
    sigma = 1 for a denoiser, c_noise = 1 for a backbone. Modules that did not run get
    ``ModuleInfo(None, None)``. The rule for ``role`` is in the module docstring.
    """
    calls = _record_calls(model, example_input)
    spatial = [call for module_calls in calls.values() for call in module_calls if call.size is not None]
    if not spatial:
        raise ShapeError(
            f"{type(model).__name__}: no module produced a [B, C, H, W] output",
            "pass a model that works on 2-d fields and an input it accepts",
        )
    m = min(call.size for call in spatial)
    first = min(call.end for call in spatial if call.size == m)
    last = max(call.end for call in spatial if call.size == m)
    roles: dict[str, set[Role]] = defaultdict(set)
    for name, module_calls in calls.items():
        if next(model.get_submodule(name).children(), None) is None:  # a leaf: give its roles upward
            leaf_roles = {_call_role(call, first, last) for call in module_calls}
            for ancestor in _ancestors(name):
                roles[ancestor] |= leaf_roles
    infos = {}
    for name, _ in model.named_modules():
        sizes = {call.size for call in calls.get(name, []) if call.size is not None}
        infos[name] = ModuleInfo(
            resolution=next(iter(sizes)) if len(sizes) == 1 else None,
            role=next(iter(roles[name])) if len(roles[name]) == 1 else None,
        )
    return infos


def _owner(infos: dict[str, ModuleInfo], parameter_name: str) -> ModuleInfo | None:
    """The innermost module that owns the parameter and has a resolution, if any."""
    module_name = parameter_name.rpartition(".")[0]
    for name in _ancestors(module_name):
        if infos[name].resolution is not None:
            return infos[name]
    return None


def parameter_owners(model: nn.Module, example_input: Tensor | tuple) -> dict[str, ModuleInfo | None]:
    """For each named parameter, the `ModuleInfo` of its innermost owner with a resolution."""
    infos = module_resolutions(model, example_input)
    return {name: _owner(infos, name) for name, _ in model.named_parameters()}


def _full_resolution(example_input: Tensor | tuple) -> int:
    x = _call_args(example_input)[0]
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ShapeError(
            f"example input must start with a field [B, C, H, W], got {getattr(x, 'shape', type(x))}",
            "pass x or (x, sigma) with x of shape [B, C, H, W]",
        )
    return x.shape[-2]


def select_parameters(
    model: nn.Module, example_input: Tensor | tuple, mode: SelectMode
) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs to fine-tune under PIRF's layer-wise truncation (Sec. 4.2):

    - ``"high-res"``: decoder modules whose output is at the full input resolution ("LT");
    - ``"inverse"``: all other decoder modules and the bottleneck ("LT-inverse"): in PIRF's
      SongUNet the lowest-resolution middle blocks belong to the decoder, so they are included;
    - ``"all"``: every parameter ("base").

    Encoder and role-less parameters (the time embedding) appear only under "all".
    Works on a backbone or on a whole `Denoiser` / `FlowDenoiser` (names then carry its prefix).
    """
    if mode not in SELECT_MODES:
        raise ConfigError(f"unknown parameter selection {mode!r}", f"use one of {', '.join(SELECT_MODES)}")
    if mode == "all":
        return list(model.named_parameters())
    full = _full_resolution(example_input)
    owners = parameter_owners(model, example_input)
    chosen = []
    for name, parameter in model.named_parameters():
        info = owners[name]
        if info is None or info.role not in ("decoder", "bottleneck"):
            continue
        high_res = info.role == "decoder" and info.resolution == full
        if high_res == (mode == "high-res"):
            chosen.append((name, parameter))
    return chosen
