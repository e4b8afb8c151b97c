"""Sample a model written by `pirf export MODEL DIR` with torch and diffusers only (no pirf).

    python examples/sample_exported.py DIR OUT.pt [--n 8] [--steps 20] [--noise NOISE.pt]

Writes the samples, in physical units, as a tensor [n, channels, R, R] to OUT.pt.
"""

import argparse
import itertools
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from safetensors.torch import load_file


def make_periodic(unet, axes):
    """Pad every padded convolution circularly along `axes` ("x": last axis, "xy": both)."""
    for conv in [m for m in unet.modules() if isinstance(m, torch.nn.Conv2d) and m.padding != (0, 0)]:
        ph, pw = conv.padding
        conv.padding = (0, 0)

        def pad(module, args, ph=ph, pw=pw):
            x = F.pad(args[0], (pw, pw, 0, 0), mode="circular" if "x" in axes else "constant")
            return (F.pad(x, (0, 0, ph, ph), mode="circular" if "y" in axes else "constant"),)

        conv.register_forward_pre_hook(pad)


def load(folder):
    meta = json.loads(Path(folder, "pirf.json").read_text())
    unet = UNet2DModel.from_pretrained(f"{folder}/unet").eval()
    if meta["periodic"]:
        make_periodic(unet, meta["periodic"])
    cond = load_file(f"{folder}/conditioning.safetensors")["fields"] if meta["conditioning"] else None
    return unet, meta, cond


def denoise(unet, meta, cond, x, sigma):
    """D(x, sigma) ~ E[x0 | x], EDM preconditioning (Karras et al. 2022) or a rectified flow."""

    def net(inp, c):
        if cond is not None:
            inp = torch.cat([inp, cond.expand(len(inp), -1, -1, -1)], dim=1)
        return unet(inp, torch.full((len(inp),), float(c))).sample

    if meta["kind"] == "edm":
        sd, s2 = meta["sigma_data"], sigma**2 + meta["sigma_data"] ** 2
        return sd**2 / s2 * x + sigma * sd / s2**0.5 * net(x / s2**0.5, torch.tensor(sigma).log() / 4)
    t = sigma / (1 + sigma)
    return x / (1 + sigma) - t * net(x / (1 + sigma), t)


def noise_levels(meta, n):
    sigma_max = meta.get("sigma_max", 80.0)  # where the chain starts (EDM: 80)
    if meta["kind"] == "edm":  # Karras et al. 2022, eq. 5, then 0
        i = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
        top = sigma_max ** (1 / 7)
        return [*((top + i * (0.002 ** (1 / 7) - top)) ** 7).tolist(), 0.0]
    t = torch.linspace(sigma_max / (1 + sigma_max), 0, n + 1, dtype=torch.float64)  # uniform flow time
    return (t / (1 - t)).tolist()


@torch.no_grad()
def sample(unet, meta, cond, z, steps):
    """Heun (EDM Algorithm 1) from x = sigma_0 z; physical units at the end."""
    grid = noise_levels(meta, steps)
    x = grid[0] * z
    for s, s_next in itertools.pairwise(grid):
        d = (x - denoise(unet, meta, cond, x, s)) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:
            d_next = (x_next - denoise(unet, meta, cond, x_next, s_next)) / s_next
            x_next = x + (s_next - s) * (d + d_next) / 2
        x = x_next
    norm = meta["normalization"]
    scale, shift = (torch.tensor(norm[k], dtype=x.dtype).view(1, -1, 1, 1) for k in ("scale", "shift"))
    return x * scale + shift


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("out")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--noise", help="a saved tensor z [n, C, R, R] to start from")
    args = parser.parse_args()
    unet, meta, cond = load(args.folder)
    r = meta["resolution"]
    z = torch.load(args.noise) if args.noise else torch.randn(args.n, len(meta["fields"]), r, r)
    torch.save(sample(unet, meta, cond, z, args.steps), args.out)


if __name__ == "__main__":
    main()
