"""Training loops: pretraining of base models (and, later, the shared fine-tuning loop)."""

from pirf.training.config import DataConfig, ModelConfig, PretrainConfig
from pirf.training.ema import EMA, ema_beta
from pirf.training.pretrain import PretrainResult, export, pretrain

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
