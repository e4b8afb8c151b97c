import os

import numpy as np
import pytest


def convergence_order(errors: list[float], resolutions: list[int]) -> float:
    """Least-squares slope of log(error) against log(h), h ~ 1 / resolution."""
    h = 1.0 / np.asarray(resolutions, dtype=float)
    return float(np.polyfit(np.log(h), np.log(errors), 1)[0])


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep held-out reference sets solved by tests out of the user's ~/.cache/pirf."""
    cache = tmp_path_factory.mktemp("pirf-cache")
    old = os.environ.get("PIRF_CACHE")
    os.environ["PIRF_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("PIRF_CACHE", None)
    else:
        os.environ["PIRF_CACHE"] = old


def _tiny_poisson(root, kind: str):
    from pirf import data, pdes
    from pirf.training import DataConfig, ModelConfig, PretrainConfig, pretrain

    path = root / "poisson.h5"
    data.generate_dataset(pdes.get("poisson"), 64, path, resolution=16, progress=False)
    cfg = PretrainConfig(
        data=DataConfig(path=str(path)),
        out=str(root / "run"),
        model=ModelConfig(kind=kind, base_channels=8, channel_mult=(1, 2), mid_attention=False),
        steps=400,
        batch_size=16,
        lr=2e-3,
        warmup_steps=5,
        log_every=100,
        checkpoint_every=400,
    )
    pretrain(cfg, progress=False)
    return root / "run" / "model.safetensors"


@pytest.fixture(scope="session")
def tiny_poisson_model(tmp_path_factory):
    """A tiny Poisson base model (16x16, 8-channel U-Net, 400 EDM steps): its samples are rough
    but Poisson-like, so a fine-tune has a residual to lower; stands in for the shipped models."""
    return _tiny_poisson(tmp_path_factory.mktemp("tiny-base"), "edm")


@pytest.fixture(scope="session")
def tiny_poisson_flow_model(tmp_path_factory):
    """The same as `tiny_poisson_model`, as a rectified-flow model (400 flow-matching steps)."""
    return _tiny_poisson(tmp_path_factory.mktemp("tiny-flow-base"), "flow")
