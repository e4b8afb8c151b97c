"""Pretraining: the loss falls, an interrupted-then-resumed run equals the uninterrupted one,
and the exported model loads elsewhere with its provenance."""

import importlib
import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import pirf.pdes as pdes
from pirf import data
from pirf.errors import ConfigError, DataFileError, OutputExistsError
from pirf.models.checkpoint import load_checkpoint
from pirf.models.factory import load_denoiser
from pirf.training import DataConfig, ModelConfig, PretrainConfig, pretrain

TINY = ModelConfig(base_channels=8, channel_mult=(1, 2), mid_attention=False)


@pytest.fixture(scope="module")
def poisson_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "poisson.h5"
    data.generate_dataset(pdes.get("poisson"), 64, path, resolution=16, progress=False)
    return path


def _config(poisson_file, out, **kw):
    base = dict(
        data=DataConfig(path=str(poisson_file)),
        out=str(out),
        model=TINY,
        steps=6,
        batch_size=8,
        log_every=2,
        checkpoint_every=3,
        warmup_steps=1,
        lr=1e-3,
    )
    return PretrainConfig(**{**base, **kw})


@pytest.mark.parametrize("kind", ["edm", "flow"])
def test_short_pretraining_lowers_the_loss(poisson_file, tmp_path, kind):
    cfg = _config(
        poisson_file,
        tmp_path / kind,
        steps=60,
        log_every=10,
        model=ModelConfig(kind=kind, base_channels=8, channel_mult=(1, 2), mid_attention=False),
    )
    pretrain(cfg, progress=False)
    lines = (tmp_path / kind / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in lines]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]


def test_resume_reproduces_the_uninterrupted_run(poisson_file, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    pretrain(_config(poisson_file, straight), progress=False)
    split = tmp_path / "split"
    calls = {"n": 0}
    original = data.FieldDataset.__getitem__

    def interrupted(self, index):  # Ctrl-C while loading the batch of step 5 (after the step-3 checkpoint)
        calls["n"] += 1
        if calls["n"] > 4 * 8:
            raise KeyboardInterrupt
        return original(self, index)

    monkeypatch.setattr(data.FieldDataset, "__getitem__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_config(poisson_file, split), progress=False)
    monkeypatch.setattr(data.FieldDataset, "__getitem__", original)
    with pytest.raises(OutputExistsError, match="--resume"):
        pretrain(_config(poisson_file, split), progress=False)
    pretrain(_config(poisson_file, split), resume=True, progress=False)
    a, _ = load_checkpoint(straight / "checkpoints" / "latest")
    b, record = load_checkpoint(split / "checkpoints" / "latest")
    assert a.keys() == b.keys() and record["step"] == 6
    for key in a:
        assert torch.equal(a[key], b[key]), key
    metrics = lambda run: [  # noqa: E731
        {k: v for k, v in json.loads(line).items() if k in ("step", "loss", "lr")}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert metrics(straight) == metrics(split)


def test_exported_model_loads_with_provenance(poisson_file, tmp_path):
    run = tmp_path / "run"
    pretrain(_config(poisson_file, run), progress=False)
    model, record = load_denoiser(run / "model", expect={"pde": "poisson"})
    assert record["pde"] == "poisson" and record["resolution"] == 16 and record["step"] == 6
    assert record["normalization"] == data.read_info(poisson_file).normalization.to_dict()
    assert "optimizer" not in record
    x = torch.randn(2, 2, 16, 16)
    assert model(x, torch.full((2,), 0.5)).shape == x.shape
    with pytest.raises(DataFileError, match="expected 'darcy'"):
        load_denoiser(run / "model", expect={"pde": "darcy"})


def test_bad_inputs_are_clear_errors(poisson_file, tmp_path):
    import shutil

    import h5py
    import numpy as np

    from pirf.config import load_config
    from pirf.errors import ConfigError, NonFiniteError

    bad = tmp_path / "nan.h5"
    shutil.copy(poisson_file, bad)
    with h5py.File(bad, "r+") as f:
        f["fields"][3, 0, 2, 2] = np.nan
    with pytest.raises(NonFiniteError, match="NaN"):
        pretrain(_config(bad, tmp_path / "run"), progress=False)
    with pytest.raises(ConfigError, match=r"does not exist.*\n.*data\.pde"):
        pretrain(_config(tmp_path / "missing.h5", tmp_path / "run2"), progress=False)
    with pytest.raises(
        ConfigError, match=r"unknown key 'model\.chanel_mult'.*\n.*did you mean 'channel_mult'"
    ):
        load_config(PretrainConfig, overrides=["model.chanel_mult=[1,2]"])


def test_missing_data_is_generated_from_the_config(tmp_path):
    cfg = PretrainConfig(
        data=DataConfig(path=str(tmp_path / "gen.h5"), pde="poisson", n=16, resolution=16),
        out=str(tmp_path / "run"),
        model=TINY,
        steps=2,
        batch_size=4,
        log_every=1,
        checkpoint_every=2,
    )
    pretrain(cfg, progress=False)
    info = data.read_info(tmp_path / "gen.h5")
    assert info.n == 16 and info.resolution == 16 and info.pde.name == "poisson"
    assert load_denoiser(tmp_path / "run" / "model")[1]["data"]["n"] == 16


def test_cosine_schedule_warms_up_then_decays_to_the_final_fraction(poisson_file, tmp_path):
    from pirf.training.pretrain import _learning_rate

    cfg = _config(poisson_file, tmp_path, steps=101, warmup_steps=10, lr_schedule="cosine", lr_final=0.1)
    rates = [_learning_rate(cfg, s) for s in range(cfg.steps)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))  # non-increasing after the warm-up
    assert rates[-1] == pytest.approx(1e-4)
    assert rates[10 + 45] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5), rel=1e-2)  # half way: the mean
    with pytest.raises(ConfigError):
        pretrain(_config(poisson_file, tmp_path / "bad", lr_final=1.5), progress=False)


def test_a_position_dependent_pde_trains_with_its_conditioning_fields(tmp_path):
    """Kolmogorov declares sin/cos(4y): the model is built with them, the record names them, the
    exported model carries their values and loads through `load_model` with the check."""
    from pirf.models.loading import load_model

    path = tmp_path / "kolmogorov.h5"
    kolmogorov = pdes.get("kolmogorov")
    data.generate_dataset(kolmogorov, 32, path, resolution=16, progress=False)
    model_cfg = ModelConfig(base_channels=8, channel_mult=(1, 2), mid_attention=False)
    cfg = PretrainConfig(
        data=DataConfig(path=str(path)), out=str(tmp_path / "run"), model=model_cfg, steps=2, batch_size=4
    )
    pretrain(cfg, progress=False)
    model, record, _ = load_model(tmp_path / "run")
    expected = kolmogorov.conditioning(16)
    assert [c["name"] for c in record["model"]["conditioning"]] == ["sin(4y)", "cos(4y)"]
    assert model.backbone.unet.config.in_channels == 3 + len(expected)
    assert torch.allclose(model.backbone.condition, torch.from_numpy(np.stack([f.values for f in expected])))
    off = PretrainConfig(
        **{**vars(cfg), "out": str(tmp_path / "off"), "model": replace(model_cfg, conditioning=False)}
    )
    pretrain(off, progress=False)
    plain, record, _ = load_model(tmp_path / "off")
    assert "conditioning" not in record["model"] and plain.backbone.unet.config.in_channels == 3


def test_a_model_whose_conditioning_disagrees_with_its_pde_is_refused(tmp_path):
    from pirf.models.factory import check_conditioning

    kolmogorov = pdes.get("kolmogorov")
    model, _ = _kolmogorov_model()
    check_conditioning(model, kolmogorov.conditioning(16), "model")  # its own: accepted
    shifted = pdes.get("kolmogorov", forcing_wavenumber=2).conditioning(16)
    with pytest.raises(DataFileError, match="conditioning"):
        check_conditioning(model, shifted, "model")


def _kolmogorov_model():
    from pirf.models.backbone import UNetConfig
    from pirf.models.factory import build_denoiser

    kolmogorov = pdes.get("kolmogorov")
    unet = UNetConfig(channels=3, resolution=16, base_channels=8, channel_mult=(1, 2), periodic="xy")
    return build_denoiser("edm", unet, 1.0, kolmogorov.conditioning(16)), kolmogorov


def test_a_flow_model_warm_starts_from_an_edm_network(poisson_file, tmp_path):
    """init_kind=flow trains the init's network as a rectified flow: the record says flow, the
    architecture and (after one step of lr 1e-12) every backbone weight are the EDM model's."""
    from pirf.models.denoiser import FlowDenoiser

    edm_run = tmp_path / "edm"
    pretrain(_config(poisson_file, edm_run, steps=2), progress=False)
    edm, _ = load_denoiser(edm_run / "model")
    untrained = _config(
        poisson_file, tmp_path / "flow0", init=str(edm_run), init_kind="flow", steps=1, lr=1e-12
    )
    pretrain(untrained, progress=False)
    flow, record = load_denoiser(tmp_path / "flow0" / "model")
    assert isinstance(flow, FlowDenoiser) and record["model"]["kind"] == "flow"
    for (name, a), b in zip(
        edm.backbone.state_dict().items(), flow.backbone.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-9), name  # one Adam step of size ~1e-12


@pytest.mark.slow
def test_a_compiled_network_keeps_its_weights_names_and_outputs():
    """`compile: true` must not change what a checkpoint holds nor what the network computes."""
    from pirf.training.pretrain import compile_network

    model, _ = _kolmogorov_model()
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        eager = model(x, 0.5)
        compile_network(model)
        compiled = model(x, 0.5)
    assert list(model.state_dict()) == keys
    assert torch.allclose(compiled, eager, atol=1e-4)


def test_short_runs_stay_eager(poisson_file, tmp_path, monkeypatch):
    """Compilation costs minutes: a run of fewer than COMPILE_MIN_STEPS steps skips it."""
    module = importlib.import_module("pirf.training.pretrain")  # the package exports a same-named function

    calls = []
    monkeypatch.setattr(module, "compile_network", lambda model: calls.append(model))
    pretrain(_config(poisson_file, tmp_path / "short", compile=True), progress=False)
    assert calls == []
    monkeypatch.setattr(module, "COMPILE_MIN_STEPS", 6)
    pretrain(_config(poisson_file, tmp_path / "long", compile=True), progress=False)
    assert len(calls) == 1


def test_ema_half_life_ramps_up_with_the_samples_seen():
    """EDM's ramp: half-life min(H, r x seen), so early weights are forgotten fast."""
    from pirf.training.ema import ema_beta

    assert ema_beta(32, 20_000.0) == pytest.approx(0.5 ** (32 / 20_000))
    assert ema_beta(32, 20_000.0, seen=1_000, rampup=0.05) == pytest.approx(0.5 ** (32 / 50))
    assert ema_beta(32, 20_000.0, seen=10**7, rampup=0.05) == pytest.approx(0.5 ** (32 / 20_000))
    assert ema_beta(32, 20_000.0, seen=1_000, rampup=0.0) == ema_beta(32, 20_000.0)


def test_resume_refuses_changed_settings_unless_allowed_and_then_records_both(poisson_file, tmp_path):
    from pirf.config.resume import differences
    from pirf.errors import ConfigError

    assert differences({"a": {"b": 1}, "c": 2}, {"a": {"b": 3}, "c": 2}) == {"a.b": (1, 3)}
    run = tmp_path / "run"
    pretrain(_config(poisson_file, run, steps=3), progress=False)  # a checkpoint at step 3
    more = _config(poisson_file, run, steps=6, lr=2e-3)
    with pytest.raises(ConfigError, match=r"lr: 0.001 -> 0.002; steps: 3 -> 6") as err:
        pretrain(more, resume=True, progress=False)
    assert "--allow-change" in err.value.fix
    assert json.loads((run / "config.json").read_text())["lr"] == 1e-3  # nothing changed
    pretrain(more, resume=True, progress=False, allow_change=True)
    assert json.loads((run / "config.json").read_text())["lr"] == 2e-3
    (change,) = [json.loads(line) for line in (run / "config_changes.jsonl").read_text().splitlines()]
    assert change["at"] == 3 and change["changed"] == {"lr": [1e-3, 2e-3], "steps": [3, 6]}
    _, record = load_checkpoint(run / "model")
    assert record["step"] == 6 and record["config"]["lr"] == 2e-3
    assert record["config_changes"] == [change]  # the record keeps both
    pretrain(more, resume=True, progress=False)  # the run's settings are now the new ones


def test_a_model_trained_to_a_wider_noise_range_starts_its_chains_there(poisson_file, tmp_path):
    """sigma_max is the top of the log-uniform training draws, is recorded with the model, and is
    where `pirf sample`'s chain (sigma_grid's default) and a fine-tune's start; older records: 80."""
    from pirf.finetune import FinetuneConfig, finetune
    from pirf.finetune.config import EvalConfig, SamplerConfig
    from pirf.models.factory import describe, from_description
    from pirf.models.loading import load_model
    from pirf.sampling.draw import sigma_grid

    cfg = _config(poisson_file, tmp_path / "wide", sigma_max=300.0, sigma_log_uniform=1.0, steps=2)
    assert cfg.noise_levels.sigma_max == 300.0
    pretrain(cfg, progress=False)
    model = load_model(tmp_path / "wide").module
    assert model.sigma_max == 300.0 and float(sigma_grid(model, 5)[0]) == 300.0
    assert float(sigma_grid(model, 5, sigma_max=80.0)[0]) == 80.0  # an explicit setting wins
    old_record = {k: v for k, v in describe(model).items() if k != "sigma_max"}
    assert from_description(old_record).sigma_max == 80.0
    ft = FinetuneConfig(
        base=str(tmp_path / "wide"),
        out=str(tmp_path / "ft"),
        iterations=1,
        batch_size=2,
        sampler=SamplerConfig(steps=3),
        eval=EvalConfig(every=1, n=2, n_reference=4),
    )
    finetune(ft, progress=False)
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["sampler"]["sigma_max"] == 300.0
    finetune(ft, resume=True, progress=False)  # the resolved value is no change of settings


@pytest.mark.parametrize("follow", [True, False])
def test_a_resume_on_another_thread_count_computes_with_the_recorded_one(
    poisson_file, tmp_path, monkeypatch, follow
):
    """A run started on 2 threads and resumed where the load left 1 free still equals the
    uninterrupted run bit for bit: it takes its recorded count again (pirf.threads). Without
    that (follow=False, the check that this test can fail) it computes on with 1."""
    pretrain_module = importlib.import_module("pirf.training.pretrain")

    if not follow:
        monkeypatch.setattr(pretrain_module, "follow_recorded", lambda recorded: None)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        pretrain(_config(poisson_file, tmp_path / "straight", steps=4, checkpoint_every=2), progress=False)
        pretrain(_config(poisson_file, tmp_path / "split", steps=2, checkpoint_every=2), progress=False)
        torch.set_num_threads(1)
        resumed = _config(poisson_file, tmp_path / "split", steps=4, checkpoint_every=2)
        pretrain(resumed, resume=True, allow_change=True, progress=False)
        assert torch.get_num_threads() == (2 if follow else 1)
    finally:
        torch.set_num_threads(before)
    a, _ = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest")
    b, record = load_checkpoint(tmp_path / "split" / "checkpoints" / "latest")
    assert record["threads"] == (2 if follow else 1)
    if follow:
        assert all(torch.equal(a[key], b[key]) for key in a)
