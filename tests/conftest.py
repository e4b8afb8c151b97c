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


def _tiny_poisson(root, kind: str, steps: int = 400, batch_size: int = 16):
    """A 64-sample 16x16 Poisson data set in ``root`` and a tiny U-Net trained on it; the model file."""
    from pirf import data, pdes
    from pirf.training import DataConfig, ModelConfig, PretrainConfig, pretrain

    path = root / "poisson.h5"
    data.generate_dataset(pdes.get("poisson"), 64, path, resolution=16, progress=False)
    cfg = PretrainConfig(
        data=DataConfig(path=str(path)),
        out=str(root / "run"),
        model=ModelConfig(kind=kind, base_channels=8, channel_mult=(1, 2), mid_attention=False),
        steps=steps,
        batch_size=batch_size,
        lr=2e-3 if steps > 100 else 1e-3,
        warmup_steps=5 if steps > 100 else 1,
        log_every=min(100, steps // 2),
        checkpoint_every=steps,
    )
    pretrain(cfg, progress=False)
    return root / "run" / "model.safetensors"


@pytest.fixture(scope="session")
def rough_poisson_model(tmp_path_factory):
    """A Poisson model trained for 4 steps (rough samples) with its data set beside it: for the
    tests of file and command paths, where the samples' quality does not matter."""
    return _tiny_poisson(tmp_path_factory.mktemp("rough-base"), "edm", steps=4, batch_size=8)


@pytest.fixture(scope="session")
def tiny_poisson_model(tmp_path_factory):
    """A tiny Poisson base model (16x16, 8-channel U-Net, 400 EDM steps): its samples are rough
    but Poisson-like, so a fine-tune has a residual to lower; stands in for the shipped models."""
    return _tiny_poisson(tmp_path_factory.mktemp("tiny-base"), "edm")


@pytest.fixture(scope="session")
def tiny_poisson_flow_model(tmp_path_factory):
    """The same as `tiny_poisson_model`, as a rectified-flow model (400 flow-matching steps)."""
    return _tiny_poisson(tmp_path_factory.mktemp("tiny-flow-base"), "flow")
