"""U-Net backbones ``F(x, c_noise) -> Tensor`` on diffusers' `UNet2DModel`, optionally periodic.

The network is a plain DDPM-style U-Net (Ho et al. 2020): per level ``layers_per_block`` residual
blocks (+ self-attention where the level's resolution is in ``attention_resolutions``), a strided
3x3 convolution down, nearest-neighbour upsampling + 3x3 convolution up, skip connections by
concatenation, a bottleneck of two residual blocks around one attention layer. Level i runs at
``resolution / 2^i`` with ``base_channels * channel_mult[i]`` channels. It is not EDM's DDPM++
(Song et al. 2021): no resampling filter, no 1/sqrt(2) skip scaling, and the bottleneck is a
separate mid-block rather than the decoder's first blocks; parameter counts differ accordingly.

Noise conditioning. diffusers calls it ``timestep`` and embeds it with DDPM's sinusoids,
emb = [cos(c w_k), sin(c w_k)], w_k = 10000^(-k / (half - 1)) -- with ``flip_sin_to_cos=True`` and
``freq_shift=1`` this is exactly EDM's ``PositionalEmbedding(endpoint=True)``, and like EDM we
feed it c_noise = ln(sigma) / 4 unscaled: the embedding is a smooth function of any real input,
negative values included (sin is odd, so -c and c embed differently). One trap: a Python float
``timestep`` is cast to ``torch.long`` (truncated) by `UNet2DModel.forward`; `UNetBackbone`
always passes a floating tensor.

Periodic padding (``periodic="x"`` or ``"xy"``): every Conv2d with padding > 0 becomes a
`PeriodicConv2d`, which pads circularly along the periodic axes (x = width, the last axis; y =
height) and with zeros along the others. Attention, group norm, nearest upsampling and stride-2
convolutions on even sizes all commute with circular shifts, so a periodic network is exactly
shift-equivariant for shifts by multiples of 2^(levels - 1). Burgers (periodic in x, stored as a
time x space image) takes "x"; Kolmogorov flow takes "xy".

Physics guide (``guide_channels`` = C > 0; PG-Diffusion, Shu, Li & Barati Farimani 2023): the
network also takes a guide g ``[B, C, H, W]`` (the gradient of the residual norm at its input,
`pirf.training.pgdiffusion`) through `GuideEmbedding`, whose output is concatenated after the
noisy and the conditioning channels. The embedding's last convolution starts at zero, so a new
guide path changes nothing until training moves it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torch import Tensor, nn

from pirf.errors import ConfigError, ShapeError

Periodic = Literal["x", "xy"] | None
MAX_WIDTH = 4096
"""The widest U-Net level pirf builds (channels): a bound against records that would allocate
without limit (the PIRF paper's network is 256 wide)."""


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a `UNetBackbone` (JSON-able: `dataclasses.asdict` / `UNetConfig.from_dict`).

    Defaults are a CPU-sized net (1.06M parameters at any resolution). PIRF's paper scale (DDPM++-like) is
    ``base_channels=128, channel_mult=(2, 2, 2), layers_per_block=4, dropout=0.13`` with attention
    at 16x16 where such a level exists.
    """

    channels: int
    resolution: int
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    layers_per_block: int = 1
    attention_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    periodic: Periodic = None
    mid_attention: bool = True
    condition_channels: int = 0  # fixed input fields beside the noisy ones (`PDE.conditioning`)
    guide_channels: int = 0  # C: a physics guide g shaped like x enters through `GuideEmbedding`

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def levels(self) -> tuple[int, ...]:
        """Spatial size of each level, finest first (e.g. 32, 16, 8)."""
        return tuple(self.resolution // 2**i for i in range(len(self.channel_mult)))

    @property
    def norm_groups(self) -> int:
        """Group-norm groups: EDM's min(32, C / 4) rule applied to the base width (and dividing it)."""
        cap = max(1, min(32, self.base_channels // 4))
        return max(g for g in range(1, cap + 1) if self.base_channels % g == 0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Inverse of `dataclasses.asdict` (lists back to tuples; unknown keys are an error)."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"unknown U-Net config keys {unknown}", f"valid keys: {', '.join(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _validate(c: UNetConfig) -> None:
    def bad(problem: str, fix: str) -> ConfigError:
        return ConfigError(f"U-Net config: {problem}", fix)

    if c.channels < 1 or c.base_channels < 4:
        raise bad(f"channels={c.channels}, base_channels={c.base_channels}", "use channels >= 1, base >= 4")
    if not c.channel_mult or min(c.channel_mult) < 1 or c.layers_per_block < 1:
        raise bad(
            f"channel_mult={c.channel_mult}, layers_per_block={c.layers_per_block}", "use positive values"
        )
    widest = c.base_channels * max(c.channel_mult)
    if widest > MAX_WIDTH or c.layers_per_block > 16 or len(c.channel_mult) > 8:
        raise bad(
            f"base_channels={c.base_channels}, channel_mult={c.channel_mult}, layers_per_block="
            f"{c.layers_per_block} ({widest} channels at the widest level)",
            f"pirf builds U-Nets up to {MAX_WIDTH} channels wide, 16 blocks per level and 8 levels "
            "(the PIRF paper's is 256 wide); a record asking for more is damaged or not pirf's",
        )
    step = 2 ** (len(c.channel_mult) - 1)
    if c.resolution < step or c.resolution % step:
        raise bad(
            f"resolution {c.resolution} is not divisible by 2^(levels - 1) = {step}",
            "choose a resolution divisible by that, or fewer levels (a shorter channel_mult)",
        )
    missing = sorted(set(c.attention_resolutions) - set(c.levels))
    if missing:
        raise bad(
            f"attention resolutions {missing} are not levels of this U-Net (levels {list(c.levels)})",
            "pick attention_resolutions among the levels (the bottleneck has attention anyway)",
        )
    if not 0 <= c.dropout < 1:
        raise bad(f"dropout {c.dropout}", "use 0 <= dropout < 1")
    if not isinstance(c.condition_channels, int) or c.condition_channels < 0:
        raise bad(f"condition_channels={c.condition_channels!r}", "use a count >= 0")
    if isinstance(c.guide_channels, bool) or c.guide_channels not in (0, c.channels):
        raise bad(
            f"guide_channels={c.guide_channels!r} for {c.channels} field channel(s)",
            f"use 0 (no physics guide) or {c.channels} (a guide shaped like the fields)",
        )
    if c.periodic not in (None, "x", "xy"):
        raise bad(f"periodic={c.periodic!r}", "use None, 'x' (width axis only) or 'xy'")


class PeriodicConv2d(nn.Conv2d):
    """A Conv2d that pads circularly along the periodic axes and with zeros along the others.

    It takes over the weight and bias of the convolution it replaces (same parameter names, so
    state dicts move freely between periodic and non-periodic networks); its own ``padding`` is 0
    and the halo it adds is ``halo = (pad_h, pad_w)``.
    """

    def __init__(self, conv: nn.Conv2d, periodic: str) -> None:
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ConfigError(
                f"cannot make a Conv2d with padding={conv.padding!r}, mode {conv.padding_mode!r} periodic",
                "use integer zero padding in the backbone",
            )
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=0,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        self.weight, self.bias = conv.weight, conv.bias
        self.halo = (int(conv.padding[0]), int(conv.padding[1]))
        self.periodic = periodic

    def forward(self, x: Tensor) -> Tensor:
        pad_h, pad_w = self.halo
        x = F.pad(x, (pad_w, pad_w, 0, 0), mode="circular" if "x" in self.periodic else "constant")
        x = F.pad(x, (0, 0, pad_h, pad_h), mode="circular" if "y" in self.periodic else "constant")
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, halo={self.halo}, periodic={self.periodic!r}"


def make_periodic(module: nn.Module, periodic: str) -> int:
    """Replace, in place, every zero-padded `nn.Conv2d` inside ``module`` by a `PeriodicConv2d`.

    Returns the number of convolutions replaced.
    """
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d and any(p != 0 for p in child.padding):
                setattr(parent, name, PeriodicConv2d(child, periodic))
                replaced += 1
    return replaced


class GuideEmbedding(nn.Module):
    """PG-Diffusion's learned embedding of the physics guide g (Shu et al. 2023):

        e(g) = conv3x3(GELU(conv1x1(g))),   C -> ``width`` -> C channels, padding 1,

    ``[B, C, H, W]`` in and out. The first convolution keeps PyTorch's default initialization and
    only the last one starts at zero (weight and bias): e = 0 at first, yet the last convolution's
    gradient, GELU(conv1x1(g)) times the gradient reaching e, is not zero, so the path learns.
    Zeroing both (as PIRF's re-implementation does) kills the path for good: the first
    convolution's gradient is W2^T(...) = 0 and the last one's weight gradient delta GELU(0) = 0, so
    both weights stay zero and only the last bias learns, a constant e(g) = b2 blind to g
    (docs/paper.md).
    """

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.inner = nn.Conv2d(channels, width, kernel_size=1)
        self.act = nn.GELU()
        self.outer = nn.Conv2d(width, channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, guide: Tensor) -> Tensor:
        return self.outer(self.act(self.inner(guide)))


class UNetBackbone(nn.Module):
    """``F(x, c_noise)``: a diffusers `UNet2DModel` that takes the conditioning as a tensor.

    ``x`` is ``[B, channels, H, W]`` (H, W divisible by 2^(levels - 1); normally ``resolution``),
    ``c_noise`` a float, 0-d or ``[B]`` tensor of any real values. Returns a tensor shaped like x.

    Conditioning fields (``condition_channels`` > 0): a buffer ``condition`` ``[K, R, R]`` of fixed
    fields (`pirf.pdes.PDE.conditioning`, set with `set_condition`) is concatenated to x along
    the channels at every call, so the U-Net's input has ``channels + K`` channels and its output
    ``channels``. The buffer is part of the state dict: a checkpoint carries the exact fields.

    Physics guide (``guide_channels`` > 0): ``forward(x, c_noise, guide)`` also takes g shaped
    like x; its embedding (`GuideEmbedding`, the submodule ``guide_embedding``) is appended after
    the conditioning fields, so the U-Net's input has ``channels + K + channels`` channels. g None
    means unguided and is the same call as g = 0 (the embedding of zeros still runs, so every
    parameter takes part in every call).
    """

    condition: Tensor

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self.channels = config.channels
        self.resolution = config.resolution
        self.unet = _build_unet(config)
        if config.guide_channels:
            self.guide_embedding = GuideEmbedding(config.guide_channels, config.base_channels)
        if config.periodic is not None:
            make_periodic(self, config.periodic)  # the U-Net and the guide's 3x3 convolution
        self.condition_names: tuple[str, ...] = ()  # labels and formulas of the fields (the record's)
        self.condition_formulas: tuple[str, ...] = ()
        if config.condition_channels:
            size = (config.condition_channels, config.resolution, config.resolution)
            self.register_buffer("condition", torch.zeros(size))

    def set_condition(self, fields: Tensor) -> None:
        """Fill the conditioning buffer with ``fields`` ``[K, R, R]`` (K = ``condition_channels``)."""
        expected = (self.config.condition_channels, self.resolution, self.resolution)
        if tuple(fields.shape) != expected or not expected[0]:
            raise ConfigError(
                f"conditioning fields of shape {list(fields.shape)} for a U-Net built for {list(expected)}",
                "build the U-Net with condition_channels = the number of the PDE's conditioning fields",
            )
        with torch.no_grad():
            self.condition.copy_(fields.to(self.condition))

    def forward(self, x: Tensor, c_noise: float | Tensor, guide: Tensor | None = None) -> Tensor:
        # a Python float would be truncated to an integer by UNet2DModel: always pass a float tensor
        c_noise = torch.as_tensor(c_noise, dtype=x.dtype, device=x.device).flatten()
        if guide is not None and guide.shape != x.shape:
            raise ShapeError(
                f"a physics guide of shape {list(guide.shape)} for fields of shape {list(x.shape)}",
                "pass the guide shaped like the fields (the gradient of the residual norm at x)",
            )
        inputs = [x]
        if self.config.condition_channels:
            inputs.append(self.condition.to(x.dtype).expand(x.shape[0], *self.condition.shape))
        if self.config.guide_channels:
            inputs.append(self.guide_embedding(torch.zeros_like(x) if guide is None else guide))
        elif guide is not None:
            raise ConfigError(
                "a physics guide was passed to a U-Net built without a guide path",
                "build it with guide_channels = channels (PG-Diffusion), or call it without guide",
            )
        x = torch.cat(inputs, dim=1) if len(inputs) > 1 else x
        return self.unet(x, c_noise, return_dict=False)[0]


def _build_unet(c: UNetConfig) -> UNet2DModel:
    attention = [res in c.attention_resolutions for res in c.levels]
    return UNet2DModel(
        sample_size=c.resolution,
        in_channels=c.channels + c.condition_channels + c.guide_channels,
        out_channels=c.channels,
        time_embedding_type="positional",
        time_embedding_dim=4 * c.base_channels,  # EDM: emb_channels = 4 * model_channels
        flip_sin_to_cos=True,  # cos first, frequencies 10000^(-k/(half-1)): EDM's PositionalEmbedding
        freq_shift=1,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        block_out_channels=tuple(c.base_channels * m for m in c.channel_mult),
        layers_per_block=c.layers_per_block,
        dropout=c.dropout,
        attention_head_dim=None,  # one head per attention layer, as in DDPM++
        norm_num_groups=c.norm_groups,
        add_attention=c.mid_attention,
    )


def make_unet(
    channels: int,
    resolution: int,
    *,
    base_channels: int = 32,
    channel_mult: tuple[int, ...] = (1, 2, 2),
    layers_per_block: int = 1,
    attention_resolutions: tuple[int, ...] = (),
    dropout: float = 0.0,
    periodic: Periodic = None,
    mid_attention: bool = True,
    condition_channels: int = 0,
    guide_channels: int = 0,
) -> UNetBackbone:
    """A U-Net backbone ``F(x, c_noise)`` for ``[B, channels, resolution, resolution]`` fields.

    See `UNetConfig` for the arguments. ``periodic``: None (zero padding), ``"x"`` (circular along
    the width axis, e.g. Burgers) or ``"xy"`` (both axes, e.g. Kolmogorov flow).
    """
    config = UNetConfig(
        channels=channels,
        resolution=resolution,
        base_channels=base_channels,
        channel_mult=tuple(channel_mult),
        layers_per_block=layers_per_block,
        attention_resolutions=tuple(attention_resolutions),
        dropout=dropout,
        periodic=periodic,
        mid_attention=mid_attention,
        condition_channels=condition_channels,
        guide_channels=guide_channels,
    )
    return UNetBackbone(config)
