"""PG-Diffusion (Shu et al. 2023), the training-based baseline that reads a physics guide: the
guide path starts silent yet learns (unlike an all-zero embedding), a warm start is its base bit
for bit, the sampler's unguided share, the loss's guide dropout, a tiny training run that
records, reloads and samples, its bench row, and the refusals."""

import json
import math

import h5py
import pytest
import torch

from pirf import pdes
from pirf.errors import ConfigError
from pirf.finetune.config import FinetuneConfig
from pirf.finetune.context import build_context
from pirf.models.backbone import PeriodicConv2d, UNetConfig
from pirf.models.export import export_model
from pirf.models.factory import build_denoiser, with_guide_path
from pirf.models.loading import load_model
from pirf.pdes import ConditioningField
from pirf.sampling import karras_sigmas, sample_euler
from pirf.sampling.guidance import loss_gradient, pg_unguided_steps, sample_euler_pg
from pirf.sampling.guided import GuidanceSettings, physics_guided
from pirf.training import DataConfig, ModelConfig, PretrainConfig, pretrain
from pirf.training.pgdiffusion import pg_loss

TINY = {"base_channels": 8, "channel_mult": (1, 2), "mid_attention": False}


def _unet(channels=2, periodic=None, guide=False):
    return UNetConfig(channels, 16, periodic=periodic, guide_channels=channels if guide else 0, **TINY)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _base(periodic=None, conditioning=True):
    torch.manual_seed(0)
    fields = [ConditioningField("y", "y", _randn(16, 16, seed=9).numpy())] if conditioning else []
    return build_denoiser("edm", _unet(periodic=periodic), 1.0, fields).eval()


# -- the network ----------------------------------------------------------------------------------
@pytest.mark.parametrize("periodic", [None, "xy"])
def test_a_warm_started_pg_model_is_its_base_bit_for_bit_for_any_guide(periodic):
    base = _base(periodic)
    pg = with_guide_path(base).eval()
    assert pg.backbone.config.guide_channels == 2 and base.backbone.config.guide_channels == 0
    assert pg.backbone.unet.conv_in.in_channels == 2 + 1 + 2  # fields, conditioning, guide
    if periodic:
        assert isinstance(pg.backbone.guide_embedding.outer, PeriodicConv2d)
    x = _randn(3, 2, 16, 16, seed=1)
    with torch.no_grad():
        for sigma in (0.01, 0.7, 80.0):
            plain = base(x, sigma)
            assert torch.equal(pg(x, sigma), plain)
            for seed in (2, 3):
                assert torch.equal(pg(x, sigma, guide=100 * _randn(3, 2, 16, 16, seed=seed)), plain)
    # the new input columns keep their fresh initialization (a zero there would kill the path)
    assert pg.backbone.unet.conv_in.weight[:, 3:].abs().sum() > 0
    assert with_guide_path(pg) is pg


def _step_on_guide(model, steps=1):
    """``steps`` Adam steps on a regression whose target depends on the guide; returns the
    guide-path gradients of the first step and the outputs for two guides afterwards."""
    x, g1, g2 = _randn(4, 2, 16, 16, seed=1), _randn(4, 2, 16, 16, seed=2), _randn(4, 2, 16, 16, seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    grads = {}
    for step in range(steps):
        optimizer.zero_grad()
        loss = (model(x, 1.0, guide=g1) - g1).pow(2).mean()
        loss.backward()
        if step == 0:
            grads = {n: p.grad.clone() for n, p in model.backbone.guide_embedding.named_parameters()}
        optimizer.step()
    with torch.no_grad():
        return grads, model(x, 1.0, guide=g1), model(x, 1.0, guide=g2), model(x, 1.0)


def test_the_guide_path_learns_from_step_one_but_an_all_zero_embedding_never_does():
    """Last convolution zero: its gradient GELU(conv1x1(g)) x (what reaches e) is nonzero, so one
    step makes the output depend on g. Both convolutions zero (PIRF's re-implementation): the last
    one's weight gradient is delta GELU(0) = 0, the first one's W2^T(...) = 0, and Adam never moves
    them; only the last bias learns, a constant e(g) = b2 that no guide changes."""
    pg = with_guide_path(_base()).train()
    grads, out1, out2, unguided = _step_on_guide(pg)
    assert grads["outer.weight"].abs().sum() > 0 and grads["outer.bias"].abs().sum() > 0
    assert not torch.equal(out1, out2) and not torch.equal(out1, unguided)

    dead = with_guide_path(_base()).train()
    torch.nn.init.zeros_(dead.backbone.guide_embedding.inner.weight)
    torch.nn.init.zeros_(dead.backbone.guide_embedding.inner.bias)
    grads, out1, out2, unguided = _step_on_guide(dead, steps=3)
    embedding = dict(dead.backbone.guide_embedding.named_parameters())
    for name in ("inner.weight", "inner.bias", "outer.weight"):
        assert torch.count_nonzero(grads[name]) == 0 and torch.count_nonzero(embedding[name]) == 0, name
    assert torch.count_nonzero(embedding["outer.bias"]) > 0  # the constant it learns instead
    assert torch.equal(out1, out2) and torch.equal(out1, unguided)  # blind to the guide


def test_a_fresh_pg_network_starts_deaf_to_its_guide_and_refuses_a_guide_without_a_path():
    torch.manual_seed(0)
    model = build_denoiser("edm", _unet(guide=True), 1.0).eval()
    x = _randn(2, 2, 16, 16, seed=1)
    with torch.no_grad():
        assert torch.equal(model(x, 0.5, guide=_randn(2, 2, 16, 16, seed=2)), model(x, 0.5))
    with pytest.raises(ConfigError, match="without a guide path"):
        _base()(x, 0.5, guide=x)
    with pytest.raises(ConfigError, match="EDM models only"):
        build_denoiser("flow", _unet(guide=True), 1.0)
    with pytest.raises(ConfigError, match="guide_channels"):
        UNetConfig(2, 16, guide_channels=1)


def test_export_refuses_a_pg_model(tmp_path):
    record = {"normalization": {"shift": [0, 0], "scale": [1, 1]}, "pde": "poisson", "resolution": 16}
    with pytest.raises(ConfigError, match="PG-Diffusion"):
        export_model(with_guide_path(_base()), record, tmp_path / "export")
    assert not (tmp_path / "export").exists()


# -- sampling and the loss -------------------------------------------------------------------------
class Spy(torch.nn.Module):
    """A denoiser D(x, sigma) = x / (1 + sigma^2) that records every call's guide (None: unguided)."""

    sigma_data, channels, resolution = 1.0, 1, 4

    def __init__(self):
        super().__init__()
        self.guides = []

    def forward(self, x, sigma, guide=None):
        self.guides.append(guide)
        return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)


def _norm(x):
    return x.pow(2).sum(dim=(1, 2, 3)).sqrt()


@pytest.mark.parametrize("n", [1, 4, 7, 10, 20])
def test_the_pg_chain_calls_the_network_unguided_on_the_first_ceil_3n_over_10_steps(n):
    assert pg_unguided_steps(n) == math.ceil(3 * n / 10)
    spy, noise = Spy(), _randn(3, 1, 4, 4, seed=4)
    sigmas = karras_sigmas(n).float()
    out = sample_euler_pg(spy, noise, sigmas, _norm, return_trajectory=True)
    assert out.nfe == n == len(spy.guides)
    unguided = [g is None for g in spy.guides]
    assert unguided == [i < 0.3 * n for i in range(n)]
    for i, guide in enumerate(spy.guides):  # the guide is grad ||x_i|| at the step's own state
        if guide is not None:
            torch.testing.assert_close(guide, loss_gradient(_norm, out.trajectory[i]))
    # the spy ignores its guide, so the chain is plain Euler
    assert torch.equal(out.x0, sample_euler(Spy(), noise, sigmas).x0)


@pytest.mark.parametrize(("dropout", "guided"), [(0.0, True), (1.0, False)])
def test_the_loss_guides_at_the_noisy_input_unless_the_batch_drops_the_guide(dropout, guided):
    spy, x0 = Spy(), _randn(5, 1, 4, 4, seed=5)
    loss = pg_loss(spy, x0, _norm, dropout, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and len(spy.guides) == 1 and (spy.guides[0] is not None) == guided
    if guided:  # the same draws of sigma and n as the plain EDM loss, then g at x0 + sigma n
        generator = torch.Generator().manual_seed(0)
        sigma = torch.exp(-1.2 + 1.2 * torch.randn(5, 1, 1, 1, generator=generator))
        x = x0 + sigma * torch.randn(x0.shape, generator=generator)
        torch.testing.assert_close(spy.guides[0], loss_gradient(_norm, x))
    calls = []  # dropout 0.5: one coin per batch, both ways over 40 seeds
    for s in range(40):
        spy = Spy()
        pg_loss(spy, x0, _norm, 0.5, torch.Generator().manual_seed(s))
        calls.append(spy.guides[0] is None)
    assert 5 < sum(calls) < 35


# -- training, reloading, sampling -----------------------------------------------------------------
def _pg_run(base_file, out, **kw):
    record = load_model(base_file).record
    settings = {
        "data": DataConfig(path=record["config"]["data"]["path"]),
        "out": str(out),
        "init": str(base_file),
        "physics_guide": True,
        "steps": 4,
        "batch_size": 4,
        "warmup_steps": 1,
        "lr": 1e-3,
        "log_every": 2,
        "checkpoint_every": 2,
    }
    return PretrainConfig(**(settings | kw))


def test_a_tiny_pg_run_records_its_guide_reloads_and_samples_with_its_chain(rough_poisson_model, tmp_path):
    from pirf.evaluation.runner import sample

    result = pretrain(_pg_run(rough_poisson_model, tmp_path / "pg", guide_dropout=0.25), progress=False)
    loaded = load_model(result.run_dir / "model.safetensors")
    record = loaded.record
    assert physics_guided(record) and record["config"]["physics_guide"] is True
    assert record["config"]["guide_dropout"] == 0.25
    channels = len(pdes.get("poisson").fields)
    assert record["model"]["unet"]["guide_channels"] == channels == loaded.module.channels
    assert loaded.module.backbone.guide_embedding.outer.weight.abs().sum() > 0  # it trained
    _, drawn, _ = sample(loaded.path, tmp_path / "samples", n=3, steps=5, batch_size=2, progress=False)
    assert drawn.nfe_per_sample == 5 and drawn.sampler == "euler" and drawn.finite().all()
    with h5py.File(tmp_path / "samples" / "samples.h5") as f:  # the file says how they were drawn
        provenance = json.loads(f.attrs["sampling"])
    assert provenance["guidance"]["kind"] == "pg-diffusion" and provenance["sampler"] == "euler"
    for options in ({"guidance": GuidanceSettings("dps", zeta=1e-3)}, {"sampler": "heun"}):
        with pytest.raises(ConfigError, match="PG-Diffusion model"):
            sample(loaded.path, tmp_path / "other", n=2, steps=3, progress=False, **options)


def test_pg_settings_are_refused_where_they_cannot_apply(rough_poisson_model, tmp_path):
    with pytest.raises(ConfigError, match="one baseline at a time"):
        pretrain(_pg_run(rough_poisson_model, tmp_path / "a", physics_weight=0.1), progress=False)
    with pytest.raises(ConfigError, match="EDM models only"):
        pretrain(_pg_run(rough_poisson_model, tmp_path / "b", init_kind="flow"), progress=False)
    first = pretrain(_pg_run(rough_poisson_model, tmp_path / "c", steps=2), progress=False)
    again = _pg_run(first.run_dir / "model.safetensors", tmp_path / "d", physics_guide=False)
    with pytest.raises(ConfigError, match="physics_guide is false"):
        pretrain(again, progress=False)
    # a fine-tune would call the network unguided with its own chain: refused, not silently done
    with pytest.raises(ConfigError, match="a fine-tune of a PG-Diffusion model"):
        build_context(FinetuneConfig(base=str(first.run_dir / "model.safetensors")))
    fresh = _pg_run(rough_poisson_model, tmp_path / "e", init="", model=ModelConfig(kind="flow", **TINY))
    with pytest.raises(ConfigError, match="EDM models only"):
        pretrain(fresh, progress=False)
