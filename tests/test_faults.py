"""Numerical faults in the training loops: a reward that is NaN for some samples, a gradient that
explodes, a learning rate that diverges, a pretraining loss that turns NaN. Bad steps are skipped
and counted, persistent ones stop the run with a message, and the last checkpoint holds weights
of a good step (`pirf.training.faults`)."""

import importlib
import json
import math

import pytest
import torch

from pirf import rewards as rewards_module
from pirf.errors import DivergenceError
from pirf.finetune import finetune
from pirf.models.checkpoint import load_checkpoint
from pirf.models.factory import load_denoiser
from pirf.rewards import ResidualReward, RewardConfig, register_reward
from pirf.training import pretrain
from pirf.training.faults import BadSteps, diverged
from test_finetune import _config as finetune_config
from test_pretrain import _config as pretrain_config

pretrain_module = importlib.import_module("pirf.training.pretrain")  # the package exports the function


class FlakyReward(ResidualReward):
    """The residual reward, NaN for sample 0 on the calls (0-based) in ``bad_calls``, or times
    ``scale`` on the calls in ``scaled_calls``."""

    def __init__(self, pde, bad_calls=(), scaled_calls=(), scale=1.0):
        super().__init__(pde)
        self.calls, self.scale = 0, scale
        self.bad_calls, self.scaled_calls = set(bad_calls), set(scaled_calls)

    def __call__(self, x):
        reward = super().__call__(x)
        call, self.calls = self.calls, self.calls + 1
        if call in self.bad_calls:
            reward = torch.cat([reward[:1] * math.nan, reward[1:]])
        if call in self.scaled_calls:
            reward = reward * self.scale
        return reward


def _config(base, out, **kw):
    """`test_finetune`'s tiny fine-tune, with a constant lr and a checkpoint every iteration."""
    return finetune_config(base, out, **({"lr_schedule": "constant", "checkpoint_every": 1} | kw))


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _model(run):
    tensors, record = load_checkpoint(run / "checkpoints" / "latest")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}, record


@pytest.fixture(autouse=True)
def _private_registry(monkeypatch):
    """The rewards these tests register vanish after each test."""
    monkeypatch.setattr(rewards_module, "_REGISTRY", dict(rewards_module._REGISTRY))


def _register(name, **kw):
    register_reward(name, lambda pde: FlakyReward(pde, **kw), replace=True)
    return RewardConfig(source=name)


def test_bad_step_counter_and_divergence_rule():
    bad = BadSteps()
    for ok in (True, False, False, True, False):
        bad.record(ok)
    assert (bad.total, bad.consecutive) == (3, 1)
    assert diverged(101.0, 1.0, 100.0) and not diverged(99.0, 1.0, 100.0)
    assert not diverged(math.nan, 1.0, 100.0)  # NaN is caught as a non-finite loss instead
    assert not diverged(1e9, 1.0, 0.0) and not diverged(1e9, math.inf, 100.0)  # off / no base


def test_a_reward_nan_for_some_samples_skips_and_counts_those_steps(tiny_poisson_model, tmp_path):
    reward = _register("nan-at-3-4", bad_calls={2, 3})
    result = finetune(_config(tiny_poisson_model, tmp_path / "run", reward=reward), progress=False)
    lines = _metrics(tmp_path / "run")
    assert result.bad_steps == 2
    assert [line["bad_steps"] for line in lines] == [0, 0, 1, 2, 2, 2]
    assert [math.isnan(line["grad_norm"]) for line in lines] == [False, False, True, True, False, False]
    weights, record = _model(tmp_path / "run")
    assert record["iteration"] == 6 and all(bool(torch.isfinite(w).all()) for w in weights.values())


def test_persistent_nan_stops_and_keeps_the_last_good_checkpoint(tiny_poisson_model, tmp_path):
    clean = tmp_path / "clean"
    finetune(_config(tiny_poisson_model, clean, iterations=2), progress=False)
    reward = _register("nan-from-3", bad_calls=set(range(2, 100)))
    run = tmp_path / "run"
    with pytest.raises(DivergenceError, match=r"3 bad steps in a row \(loss nan\).*iteration 2\)"):
        finetune(_config(tiny_poisson_model, run, reward=reward, max_bad_steps=2), progress=False)
    kept, record = _model(run)
    assert record["iteration"] == 2  # the skipped iterations 3-5 wrote no checkpoint
    reference, _ = _model(clean)
    assert all(torch.equal(kept[k], reference[k]) for k in reference)  # skipped steps moved nothing


def test_an_exploding_gradient_is_clipped_and_leaves_the_optimizer_finite(tiny_poisson_model, tmp_path):
    reward = _register("huge-at-2", scaled_calls={1}, scale=1e30)  # loss ~1e30: finite, gradients huge
    run = tmp_path / "run"
    cfg = _config(tiny_poisson_model, run, reward=reward, loss="mse", iterations=3, lr=1e-2)
    finetune(cfg, progress=False)
    tensors, _ = load_checkpoint(run / "checkpoints" / "latest")
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values())  # Adam's moments too
    base = load_denoiser(tiny_poisson_model)[0].state_dict()  # the EMA weights a fine-tune starts from
    moved = max(float((tensors[f"model.{k}"] - v).abs().max()) for k, v in base.items())
    assert 0 < moved <= 3 * 1e-2 * 1.01  # Adam moves a weight at most ~lr per step


def test_a_diverging_learning_rate_stops_the_run_before_a_checkpoint_of_bad_weights(
    tiny_poisson_model, tmp_path
):
    run = tmp_path / "run"
    with pytest.raises(DivergenceError, match=r"above 100x the base model's.*iteration 1\)") as err:
        finetune(_config(tiny_poisson_model, run, lr=100.0, max_bad_steps=1), progress=False)
    assert "lower lr" in str(err.value)
    lines = _metrics(run)
    assert [line["bad_steps"] for line in lines] == [0, 1]  # the step of iteration 1 blew it up
    _, record = _model(run)
    assert record["iteration"] == 1


# -- pretraining ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def poisson_file(rough_poisson_model):
    return rough_poisson_model.parent.parent / "poisson.h5"  # the conftest model's data set


def _pretrain_config(poisson_file, out, **kw):
    """`test_pretrain`'s tiny run, logged and checkpointed every step."""
    return pretrain_config(poisson_file, out, **({"log_every": 1, "checkpoint_every": 1} | kw))


def _nan_loss_at(monkeypatch, bad):
    original, calls = pretrain_module._loss, {"n": 0}

    def loss(*args, **kwargs):
        value, physics = original(*args, **kwargs)
        calls["n"] += 1
        return (value * math.nan if calls["n"] - 1 in bad else value), physics

    monkeypatch.setattr(pretrain_module, "_loss", loss)


def test_pretraining_skips_and_counts_nan_losses(poisson_file, tmp_path, monkeypatch):
    _nan_loss_at(monkeypatch, {2})
    pretrain(_pretrain_config(poisson_file, tmp_path / "run"), progress=False)
    lines = _metrics(tmp_path / "run")
    assert [line["bad_steps"] for line in lines] == [0, 0, 1, 1, 1, 1]
    assert math.isnan(lines[2]["loss"]) and all(math.isfinite(x["loss"]) for x in lines[3:])


def test_pretraining_stops_on_persistent_nan_and_keeps_the_last_good_checkpoint(
    poisson_file, tmp_path, monkeypatch
):
    clean = tmp_path / "clean"
    pretrain(_pretrain_config(poisson_file, clean, steps=2), progress=False)
    _nan_loss_at(monkeypatch, set(range(2, 100)))
    run = tmp_path / "run"
    with pytest.raises(DivergenceError, match=r"pretrain: 3 bad steps in a row.*step 2\)"):
        pretrain(_pretrain_config(poisson_file, run, max_bad_steps=2), progress=False)
    a, record = load_checkpoint(run / "checkpoints" / "latest")
    b, _ = load_checkpoint(clean / "checkpoints" / "latest")
    assert record["step"] == 2 and all(torch.equal(a[k], b[k]) for k in b)
