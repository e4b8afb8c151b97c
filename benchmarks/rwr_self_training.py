"""Why reward-weighted regression does not lower Darcy's residual: the model's own denoising loss on
its own samples teaches it their errors.

    python benchmarks/rwr_self_training.py          # ~8 min on 2 cores; writes results/rwr_self_training.json

Four fine-tunes of the shipped Darcy model, identical but for the data the EDM denoising loss
(`pirf.models.denoiser.denoising_losses`) is taken on: 40 iterations of 8 fields, the layers PIRF
trains (high-res decoder), Adam at lr 1e-4, EMA with a half-life of 200 fields, as in the family
bench (docs/family.md). The held-out median residual of the EMA weights (32 fixed seeds, N = 20
Heun steps) is recorded at iterations 0, 20 and 40.

- ``data``: fields of the training set (continued pre-training);
- ``samples``: the base model's own N = 20 samples, equal weights;
- ``rwr``: the same samples weighted by softmax(f / alpha) * B with f = -log residual MSE,
  alpha = 0.1 (RWR with the base as sampler, `pirf.finetune.regression.RewardWeightedRegression`);
- ``rwr+data``: that loss plus the denoising loss on 8 training fields (the pre-training term of
  Lee et al. 2023, weight 1).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
SOURCES = ("data", "samples", "rwr", "rwr+data")


def run(source: str, iterations: int, batch: int, lr: float, alpha: float) -> list[dict[str, float]]:
    from pirf.data import read_fields
    from pirf.finetune.config import resolve_finetune_config
    from pirf.finetune.context import build_context, score
    from pirf.finetune.methods import objective
    from pirf.models.denoiser import denoising_losses
    from pirf.rewards import make_reward
    from pirf.sampling import sample_heun
    from pirf.training.ema import EMA

    cfg = resolve_finetune_config("darcy", "rwr", None, ["eval.n=32"])
    ctx = build_context(cfg)
    reward = make_reward(ctx.pde, cfg.reward)
    model, base = ctx.model, copy.deepcopy(ctx.model).requires_grad_(False)
    ema = EMA(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    beta = 0.5 ** (batch / cfg.regularization.ema_halflife_samples)
    generator = torch.Generator().manual_seed(0)
    train = torch.as_tensor(ctx.normalization.normalize(read_fields(training_set_path())[:2000])).float()
    shape = (batch, *train.shape[1:])
    history = [{"iteration": 0, "residual": score(ctx, ema.model, cfg)["residual"]}]
    for iteration in range(1, iterations + 1):
        data = train[torch.randint(len(train), (batch,), generator=generator)]
        with torch.no_grad():
            samples = sample_heun(base, torch.randn(shape, generator=generator), ctx.sigmas).x0
            f = objective(reward(ctx.normalization.denormalize(samples)), "log-mse")
            weights = torch.softmax(f / alpha, dim=0) * batch
        if source == "data":
            loss = denoising_losses(model, data, generator).mean()
        elif source == "samples":
            loss = denoising_losses(model, samples, generator).mean()
        else:
            loss = (weights * denoising_losses(model, samples, generator)).mean()
            if source == "rwr+data":
                loss = loss + denoising_losses(model, data, generator).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(model, beta)
        if iteration % 20 == 0:
            history.append({"iteration": iteration, "residual": score(ctx, ema.model, cfg)["residual"]})
            print(source, history[-1], flush=True)
    return history


def training_set_path() -> Path:
    """The shipped Darcy model's training set (`pirf pretrain darcy` generates it)."""
    from pirf.config import read_yaml, resolve_config

    path = Path(read_yaml(resolve_config("pretrain", "darcy"))["data"]["path"])
    if not path.exists():
        raise SystemExit(f"{path} is missing: generate it with `pirf data generate darcy` (see its --help)")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {s: run(s, args.iterations, args.batch, args.lr, args.alpha) for s in args.sources}
    RESULTS.mkdir(exist_ok=True)
    record = {"settings": vars(args), "held_out_median_residual": results}
    (RESULTS / "rwr_self_training.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
