"""Run a short fine-tune from the command line: ``python finetune_worker.py BASE OUT`` (used
under torchrun by tests/test_distributed.py)."""

import json
import os
import sys
from pathlib import Path

from pirf.finetune import finetune
from pirf.finetune.config import EvalConfig, FinetuneConfig, RegularizationConfig, SamplerConfig


def config(base: str, out: str) -> FinetuneConfig:
    return FinetuneConfig(
        base=base,
        out=out,
        iterations=4,
        batch_size=4,
        sampler=SamplerConfig(steps=4),
        lr=1e-3,
        warmup_iterations=1,
        eval=EvalConfig(every=2, n=4, n_reference=16),
        regularization=RegularizationConfig(ema_halflife_samples=8.0, alphas=(0.5,)),
        log_every=1,
        checkpoint_every=2,
    )


if __name__ == "__main__":
    result = finetune(config(sys.argv[1], sys.argv[2]), progress=False)
    rank = os.environ.get("RANK", "0")
    (Path(sys.argv[2]) / f"checksum-rank{rank}.json").write_text(json.dumps(result.checksum))
