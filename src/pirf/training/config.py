"""The config of `pirf.training.pretrain`: the training set (`DataConfig`), the base model
(`ModelConfig`) and the run (`PretrainConfig`), saved in the run folder and in every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from pirf.models.denoiser import NoiseLevels

from pirf.config.limits import (
    COUNT,
    FINITE,
    FRACTION,
    NON_NEGATIVE,
    NON_NEGATIVE_COUNT,
    OPEN_FRACTION,
    POSITIVE,
    Limit,
)


@dataclass
class DataConfig:
    """The training set: an HDF5 file at ``path``; when it is missing and ``pde`` is given it is
    generated first (``n`` samples, ``seed``, ``resolution``, physical ``params``), so one
    command retrains a model from nothing."""

    LIMITS: ClassVar[dict[str, Limit]] = {
        "n": COUNT,
        "seed": NON_NEGATIVE_COUNT,
        "resolution": Limit(low=4, high=4096, integer=True),
    }

    path: str = ""
    pde: str | None = None
    n: int = 5000
    seed: int = 0
    resolution: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """The base model: ``kind`` "edm" (denoiser) or "flow" (rectified flow), and its U-Net."""

    LIMITS: ClassVar[dict[str, Limit]] = {
        "sigma_data": POSITIVE,
        "base_channels": Limit(low=4, high=1024, integer=True),
        "channel_mult": Limit(low=1, high=16, integer=True),
        "layers_per_block": Limit(low=1, high=16, integer=True),
        "attention_resolutions": COUNT,
        "dropout": OPEN_FRACTION,
    }

    kind: Literal["edm", "flow"] = "edm"
    sigma_data: float = 1.0  # pirf data are standardized per channel: unit variance
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    layers_per_block: int = 1
    attention_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    mid_attention: bool = True
    conditioning: bool = True  # feed the PDE's conditioning fields (`PDE.conditioning`), if it has any


@dataclass
class PretrainConfig:
    """Everything `pretrain` needs; saved in the run folder and in every checkpoint."""

    LIMITS: ClassVar[dict[str, Limit]] = {
        "steps": COUNT,
        "batch_size": COUNT,
        "lr": POSITIVE,
        "lr_final": FRACTION,
        "betas": OPEN_FRACTION,
        "warmup_steps": NON_NEGATIVE_COUNT,
        "grad_clip": NON_NEGATIVE,
        "ema_halflife_samples": POSITIVE,
        "ema_rampup": NON_NEGATIVE,
        "p_mean": FINITE,
        "p_std": POSITIVE,
        "sigma_log_uniform": FRACTION,
        "sigma_max": POSITIVE,
        "physics_weight": NON_NEGATIVE,
        "guide_dropout": FRACTION,
        "seed": NON_NEGATIVE_COUNT,
        "log_every": COUNT,
        "checkpoint_every": COUNT,
        "max_bad_steps": COUNT,
    }

    data: DataConfig = field(default_factory=DataConfig)
    out: str = "runs/pretrain"
    model: ModelConfig = field(default_factory=ModelConfig)
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after the warm-up
    lr_final: float = 0.05  # cosine: the last step's lr as a fraction of ``lr``
    betas: tuple[float, ...] = (0.9, 0.999)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_halflife_samples: float = 10_000.0
    ema_rampup: float = 0.0  # > 0: half-life min(ema_halflife_samples, ema_rampup x samples seen) (EDM: 0.05)
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_log_uniform: float = 0.0  # share of draws log-uniform over [0.002, sigma_max]; flows: t = s/(1+s)
    sigma_max: float = 80.0  # the model's largest noise level: the log-uniform draws' top, where chains start
    flow_time_sampling: Literal["uniform", "logit-normal"] = "uniform"
    init: str = ""  # a model to continue from (its EMA weights); its architecture replaces `model`
    init_kind: Literal["", "edm", "flow"] = ""  # "": the init's kind; else train its network as this kind
    physics_weight: float = 0.0  # c > 0: PIDM's loss, EDM + c R(x0_hat)^2 / (2 sigma) (`pirf.training.pidm`)
    physics_guide: bool = False  # PG-Diffusion: net reads the residual gradient (`pirf.training.pgdiffusion`)
    guide_dropout: float = 0.5  # PG-Diffusion: the share of batches trained unguided (g = 0)
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 250
    max_bad_steps: int = 10  # non-finite losses or gradients in a row before the run stops
    compile: bool = False  # torch.compile the U-Net for runs of >= COMPILE_MIN_STEPS steps (docs/models.md)

    @property
    def noise_levels(self) -> NoiseLevels:
        """The EDM training distribution of sigma (`pirf.models.denoiser.NoiseLevels`)."""
        from pirf.models.denoiser import NoiseLevels  # torch: not at import (a torch-free CLI)

        return NoiseLevels(self.p_mean, self.p_std, self.sigma_log_uniform, sigma_max=self.sigma_max)


__all__ = ["DataConfig", "ModelConfig", "PretrainConfig"]
