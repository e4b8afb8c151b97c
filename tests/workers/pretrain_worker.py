"""Run short pretrainings from the command line: ``python pretrain_worker.py DATA OUT KIND[,KIND]``
(one run per kind, in OUT/KIND; used under torchrun by tests/test_distributed.py)."""

import sys

from pirf.training import DataConfig, ModelConfig, PretrainConfig, pretrain


def config(data: str, out: str, kind: str) -> PretrainConfig:
    return PretrainConfig(
        data=DataConfig(path=data),
        out=out,
        model=ModelConfig(kind=kind, base_channels=8, channel_mult=(1, 2), mid_attention=False),
        steps=4,
        batch_size=8,
        log_every=2,
        checkpoint_every=2,
        warmup_steps=1,
        lr=1e-3,
    )


if __name__ == "__main__":
    for kind in sys.argv[3].split(","):
        pretrain(config(sys.argv[1], f"{sys.argv[2]}/{kind}", kind), progress=False)
