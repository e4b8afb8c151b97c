"""The fine-tuning methods by name: each a preset of the one fine-tuner (`pirf.finetune.config`).

Plain data, importable without torch (the `pirf` command lists the names in its help).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "pirf": {"truncation": {"mode": "fixed", "k": 2}, "layers": "high-res"},
    "draft-k": {"truncation": {"mode": "fixed", "k": 1}, "layers": "all"},
    "draft": {"truncation": {"mode": "full"}, "layers": "all", "gradient_checkpointing": True},
    "draft-lv": {"truncation": {"mode": "lv", "k": 1, "lv_copies": 2}, "layers": "all"},
    "alignprop": {"truncation": {"mode": "random"}, "layers": "all", "gradient_checkpointing": True},
    "ddpo": {"policy": {"epochs": 2, "group_size": 1}},
    "grpo": {"policy": {"epochs": 1, "group_size": 4, "kl": 0.04}},
    "rwr": {},
    "rsm": {},
    "adjoint-matching": {"policy": {"sampler": "ddim", "noise_level": 1.0}},
}
"""Every method as a named preset of one fine-tuner (PIRF, Yuan et al. 2025; DRaFT, Clark et al.
2024; AlignProp, Prabhudesai et al. 2023): reward backprop
(pirf, draft-k, draft, draft-lv, alignprop), policy gradient (ddpo, grpo), regression toward the
tilted base (rwr, rsm, adjoint-matching)."""

__all__ = ["PRESETS"]
