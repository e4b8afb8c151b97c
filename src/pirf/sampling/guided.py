"""Inference-time guidance of a model's draw by its PDE residual reward (`pirf sample --guidance`).

`GuidanceSettings` are the user's options; `guidance_chain` turns them into a whole sampling
chain for `pirf.sampling.draw`: DPS on EDM's Heun chain (DiffusionPDE; Chung et al. 2023) or
value-guided DDIM (Uehara et al. 2024), both guided by the residual of the model's own PDE.

A PG-Diffusion model (Shu et al. 2023; a network with a guide path, `physics_guided`) has a chain
of its own, `pg_chain`: `pirf sample` and `pirf evaluate` draw it with that chain (Euler, the
first 30% of the steps unguided), and other guidance on top of it is refused.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import torch

from pirf.errors import ConfigError, UnknownNameError
from pirf.models.record import record_pde
from pirf.normalization import Normalization
from pirf.rewards import ResidualReward
from pirf.sampling.chain import SampleOutput
from pirf.sampling.draw import Chain, Model
from pirf.sampling.guidance import PG_UNGUIDED, Guidance, GuidanceLoss, sample_euler_pg, sample_heun_dps
from pirf.sampling.value import VALUE_MODES, RewardValue, check_value_settings, sample_value_guided

GUIDANCE_KINDS = ("none", "dps", "value")
GUIDANCE_SAMPLER = {"dps": "heun", "value": "ddim"}
"""The chain each guidance runs: DPS guides EDM's Heun chain, value guidance a stochastic DDIM."""


@dataclass(frozen=True)
class GuidanceSettings:
    """Inference-time guidance of `sample` by the model's PDE residual reward
    (`ResidualReward` of the record's PDE, on denormalized fields). None means "not given".

    - ``kind="dps"``: DiffusionPDE's DPS on the Heun chain (`pirf.sampling.guidance`),
      x <- x - zeta grad ||R(D(x))||_2 after each of the last ``fraction`` of the steps; needs ``zeta``.
    - ``kind="value"``: value-guided DDIM (`pirf.sampling.value`, Uehara et al. 2024) toward
      p(x0) exp(r(x0) / alpha), r = -mean squared residual in physical units, so ``alpha`` is in
      those units (smaller guides harder); ``mode`` "gradient" (needs ``alpha``) or "best-of"
      (``candidates`` proposals per step, the best kept; alpha does not enter it); ``eta`` is
      DDIM's noise level in (0, 1] (default 1).
    """

    kind: str = "none"  # none, dps (DPS on the Heun chain) or value (value-guided DDIM)
    mode: str | None = None  # value guidance: gradient (the default) or best-of
    alpha: float | None = None  # value guidance: KL weight in reward units (smaller guides harder)
    candidates: int | None = None  # value guidance, best-of: proposals per step (default 4)
    zeta: float | None = None  # dps: step size of x -= zeta grad ||R(D(x))||_2
    fraction: float = 0.2  # dps: share of the steps (the last ones) that are guided
    eta: float | None = None  # value guidance: DDIM noise level in (0, 1] (default 1)

    def check(self) -> None:
        """Refuse unknown kinds and options that the chosen guidance would ignore."""
        if self.kind not in GUIDANCE_KINDS:
            close = difflib.get_close_matches(str(self.kind), GUIDANCE_KINDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownNameError(
                f"unknown guidance {self.kind!r}", f"{hint}use one of: {', '.join(GUIDANCE_KINDS)}"
            )
        value_only = {"--guidance-mode": self.mode, "--alpha": self.alpha, "--candidates": self.candidates}
        given = {"--zeta": self.zeta, "--eta": self.eta, **value_only}
        allowed = {"none": (), "dps": ("--zeta",), "value": ("--eta", *value_only)}[self.kind]
        stray = [flag for flag, v in given.items() if v is not None and flag not in allowed]
        if stray:
            raise ConfigError(
                f"{', '.join(stray)} given with --guidance {self.kind}, which does not use it",
                "--zeta belongs to --guidance dps; --guidance-mode, --alpha, --candidates and --eta "
                "to --guidance value",
            )
        if self.kind == "dps" and self.zeta is None:
            raise ConfigError(
                "--guidance dps needs a step size --zeta",
                "try a sweep such as 1e-4, 1e-3, 1e-2 (pirf bench sweeps 1e-5 .. 1 on held-out seeds)",
            )
        if self.kind == "value" and self.value_mode not in VALUE_MODES:
            close = difflib.get_close_matches(str(self.value_mode), VALUE_MODES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownNameError(
                f"unknown --guidance-mode {self.value_mode!r}", f"{hint}use one of: {', '.join(VALUE_MODES)}"
            )
        if self.kind == "value" and self.value_mode == "gradient" and self.alpha is None:
            raise ConfigError(
                "--guidance value (mode gradient) needs --alpha, the KL weight in reward units",
                "the reward is -(mean squared PDE residual) in physical units: start near the residual "
                "MSE of plain samples and lower alpha by factors of 10 (smaller guides harder; too "
                "small diverges; inf is plain DDIM); or use --guidance-mode best-of, which needs none",
            )
        if self.kind == "value":
            check_value_settings(**self.value_options())

    @property
    def value_mode(self) -> str:
        return "gradient" if self.mode is None else self.mode

    def value_options(self) -> dict[str, Any]:
        """`sample_value_guided`'s keyword arguments (best-of: alpha 1.0 unless given, for a
        finite alpha does not enter it)."""
        return {
            "alpha": 1.0 if self.alpha is None else self.alpha,
            "mode": self.value_mode,
            "candidates": 4 if self.candidates is None else self.candidates,
            "eta": 1.0 if self.eta is None else self.eta,
        }

    def describe(self) -> dict[str, Any]:
        """The settings that shaped the samples (for the provenance of the sample file)."""
        if self.kind == "dps":
            return {"kind": "dps", "zeta": self.zeta, "fraction": self.fraction, "loss": "||R(x)||_2"}
        if self.kind == "value":
            options = self.value_options()
            out: dict[str, Any] = {"kind": "value", "mode": options["mode"], "eta": options["eta"]}
            if options["mode"] == "best-of":
                out["candidates"] = options["candidates"]
            out["alpha"] = self.alpha
            out["alpha_units"] = "reward = -mean squared PDE residual, physical units"
            return out
        return {"kind": "none"}


def guided_sampler(guidance: GuidanceSettings, sampler: str | None) -> str:
    """The sampler (and noise-level grid) a guided run uses: ``sampler`` or the guidance's own
    chain (`GUIDANCE_SAMPLER`; Heun without guidance); another sampler is an error."""
    own = GUIDANCE_SAMPLER.get(guidance.kind)
    if own is None:
        return sampler or "heun"
    if sampler not in (None, own):
        raise ConfigError(
            f"--guidance {guidance.kind} runs the {own} chain, not --sampler {sampler}",
            f"drop --sampler, or pass --sampler {own}",
        )
    return own


def physics_guided(record: dict[str, Any]) -> bool:
    """Whether the model of ``record`` is a PG-Diffusion model (its U-Net has a guide path)."""
    return bool((record.get("model") or {}).get("unet", {}).get("guide_channels", 0))


def refuse_physics_guided(record: dict[str, Any], what: str) -> None:
    """Refuse a PG-Diffusion model where ``what`` (a fine-tune, a reconstruction) would call its
    network unguided with another chain, silently dropping the guide it was trained to read."""
    if physics_guided(record):
        raise ConfigError(
            f"{what} of a PG-Diffusion model (its network reads a physics guide that {what} does not give)",
            "use its base model (the init of its training run), or sample it with `pirf sample`",
        )


def residual_norm_loss(record: dict[str, Any]) -> GuidanceLoss:
    """||R(x)||_2 per sample of model-space fields x ``[B, C, H, W]``: denormalized with the
    record's normalization and read as the reward reads them (`ResidualReward.residual_norm`)."""
    reward = ResidualReward(record_pde(record))
    norm = Normalization.from_dict(record["normalization"])
    return lambda x: reward.residual_norm(norm.denormalize(x))


def pg_chain(record: dict[str, Any], unguided_fraction: float = PG_UNGUIDED) -> Chain:
    """PG-Diffusion's sampling chain for the model of ``record`` (`sample_euler_pg`): Euler steps,
    the first ceil(0.3 N) unguided, the others guided by grad_x ||R(x)||_2 at the current state."""
    loss = residual_norm_loss(record)

    def chain(model: Model, noise: torch.Tensor, sigmas: torch.Tensor) -> SampleOutput:
        return sample_euler_pg(model, noise, sigmas, loss, unguided_fraction=unguided_fraction)

    return chain


def pg_sampler(guidance: GuidanceSettings, sampler: str | None) -> str:
    """The sampler of a PG-Diffusion model's draw, ``euler``; other guidance or samplers are refused."""
    if guidance.kind != "none" or sampler not in (None, "euler"):
        asked = f"--guidance {guidance.kind}" if guidance.kind != "none" else f"--sampler {sampler}"
        raise ConfigError(
            f"{asked} for a PG-Diffusion model, which samples with its own guided Euler chain",
            "drop the option: the model reads its physics guide itself (docs/paper.md, PG-Diffusion)",
        )
    return "euler"


PG_DESCRIPTION = {
    "kind": "pg-diffusion",
    "sampler": "euler",
    "unguided_fraction": PG_UNGUIDED,
    "guide": "grad_x ||R(x)||_2 at the current state",
}
"""How a PG-Diffusion model's samples were drawn (the provenance of a sample file)."""


def guidance_chain(guidance: GuidanceSettings, record: dict[str, Any]) -> Chain | None:
    """The sampling chain of ``guidance`` for the model of ``record`` (None: no guidance),
    guided by the residual reward of the record's PDE on denormalized fields; for a PG-Diffusion
    model (`physics_guided`), its own chain (`pg_chain`; other guidance is refused)."""
    guidance.check()
    if physics_guided(record):
        pg_sampler(guidance, None)
        return pg_chain(record)
    if guidance.kind == "none":
        return None
    if guidance.kind == "dps":
        dps_settings = Guidance(residual_norm_loss(record), guidance.zeta, guidance.fraction)

        def dps(model: Model, noise: torch.Tensor, sigmas: torch.Tensor) -> SampleOutput:
            return sample_heun_dps(model, noise, sigmas, dps_settings)

        return dps
    reward = ResidualReward(record_pde(record))
    value = RewardValue(reward, Normalization.from_dict(record["normalization"]))
    options = guidance.value_options()

    def value_guided(
        model: Model, noise: torch.Tensor, sigmas: torch.Tensor, generator: Any = None
    ) -> SampleOutput:
        return sample_value_guided(model, noise, sigmas, value, generator=generator, **options)

    return value_guided
