"""Training loops: pretraining of base models (and, later, the shared fine-tuning loop)."""

from pirf.training.ema import EMA, ema_beta
from pirf.training.pretrain import DataConfig, ModelConfig, PretrainConfig, PretrainResult, export, pretrain

__all__ = [
    "EMA",
    "DataConfig",
    "ModelConfig",
    "PretrainConfig",
    "PretrainResult",
    "ema_beta",
    "export",
    "pretrain",
]
