"""Reward fine-tuning: what moves, where gradients flow, the penalty, resume, and the contract
every method keeps. A tiny Poisson base model (16x16, 400 pretraining steps) stands in for the
shipped one; Darcy's reward (projection, fixed coefficient) is tested on its own."""

import json
import math

import numpy as np
import pytest
import torch

import pirf.pdes as pdes
from pirf.config import packaged_configs
from pirf.errors import ConfigError, OutputExistsError
from pirf.finetune import PRESETS, FinetuneConfig, finetune
from pirf.finetune import seeds as seeds_module
from pirf.finetune.config import (
    EvalConfig,
    PolicyConfig,
    RegularizationConfig,
    SamplerConfig,
    TruncationConfig,
    resolve_finetune_config,
)
from pirf.finetune.methods import RewardBackprop, Rollout, fixed_difference, reward_loss
from pirf.models.denoiser import FlowDenoiser
from pirf.models.factory import load_denoiser
from pirf.normalization import Normalization
from pirf.rewards import ResidualReward, RewardConfig
from pirf.sampling import karras_sigmas, sample_heun


@pytest.fixture
def base_model(tiny_poisson_model):
    return tiny_poisson_model


def _config(base_model, out, **kw) -> FinetuneConfig:
    fields = dict(
        base=str(base_model),
        out=str(out),
        iterations=6,
        batch_size=4,
        sampler=SamplerConfig(steps=4),
        lr=1e-3,
        warmup_iterations=1,
        eval=EvalConfig(every=3, n=8, n_reference=16),
        regularization=RegularizationConfig(ema_halflife_samples=8.0, alphas=(0.5,)),
        log_every=1,
        checkpoint_every=2,
    )
    return FinetuneConfig(**(fields | kw))


def _weights(path, weights="model"):
    return load_denoiser(path, weights=weights)[0].state_dict()


def test_only_the_high_resolution_decoder_moves(base_model, tmp_path):
    finetune(_config(base_model, tmp_path / "run", layers="high-res"), progress=False)
    before, after = _weights(base_model, "ema"), _weights(tmp_path / "run" / "model")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing was trained"
    assert all("up_blocks" in k or "conv_out" in k or "conv_norm_out" in k for k in changed), changed
    frozen = [k for k in before if "down_blocks" in k or "time_embedding" in k or "mid_block" in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)


def test_gradient_equals_backprop_through_the_last_steps_only(base_model):
    model, record = load_denoiser(base_model)
    model = model.double()  # float64, so the hand-made chain matches to roundoff
    pde = pdes.get("poisson")
    reward = ResidualReward(pde)
    norm = Normalization.from_dict(record["normalization"])
    sigmas = karras_sigmas(5).double()
    noise = torch.randn(3, 2, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    method = RewardBackprop(TruncationConfig(mode="fixed", k=2), "mse", "pirf")
    rollout = Rollout(model, noise, sigmas, reward, norm, rng=None)
    loss, _ = method.loss(rollout)
    got = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    # by hand: 3 steps without autograd, then the last 2 steps with it
    with torch.no_grad():
        x = sample_heun(model, noise, sigmas[:4]).x0
    x0 = sample_heun(model, x / sigmas[3], sigmas[3:]).x0
    want = torch.autograd.grad(
        reward_loss(-reward(norm.denormalize(x0)), "mse"), list(model.parameters()), allow_unused=True
    )
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)
    # and it differs from the gradient of a 1-step window
    loss1, _ = RewardBackprop(TruncationConfig(mode="fixed", k=1), "mse", "pirf").loss(rollout)
    g1 = torch.autograd.grad(loss1, list(model.parameters()), allow_unused=True)
    assert any(a is not None and not torch.allclose(a, b) for a, b in zip(g1, got, strict=True))


def test_darcy_reward_does_not_move_the_coefficient():
    pde = pdes.get("darcy")
    x = torch.rand(2, 2, 16, 16) * 10 + 2
    x.requires_grad_(True)
    ResidualReward(pde)(x).sum().backward()
    assert x.grad[:, 0].abs().max() == 0 and x.grad[:, 1].abs().max() > 0
    y = x.detach().clone().requires_grad_(True)
    ResidualReward(pde, RewardConfig(channels=("all",), project=False))(y).sum().backward()
    assert y.grad[:, 0].abs().max() > 0
    with pytest.raises(ConfigError, match="channels"):
        ResidualReward(pde, RewardConfig(channels=("p",)))
    with pytest.raises(ConfigError, match="regions"):
        ResidualReward(pde, RewardConfig(weights={"edge": 2.0}))


def test_online_penalty_pulls_toward_the_base(base_model, tmp_path):
    def distance(run):
        before, after = _weights(base_model, "ema"), _weights(run / "model")
        return sum(float((after[k] - before[k]).pow(2).sum()) for k in before)

    free = tmp_path / "free"
    finetune(_config(base_model, free, lr=3e-3), progress=False)
    held = tmp_path / "held"
    reg = RegularizationConfig(online_lambda=1e3, ema_halflife_samples=8.0, alphas=(0.5,))
    finetune(_config(base_model, held, lr=3e-3, regularization=reg), progress=False)
    assert 0 < distance(held) < 0.5 * distance(free)


def test_resume_reproduces_the_uninterrupted_run(base_model, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    finetune(_config(base_model, straight), progress=False)
    split = tmp_path / "split"
    original = seeds_module.per_sample_noise
    calls = {"n": 0}

    def interrupted(*args, **kwargs):  # Ctrl-C at iteration 5, after the checkpoint at 4
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(seeds_module, "per_sample_noise", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune(_config(base_model, split), progress=False)
    monkeypatch.setattr(seeds_module, "per_sample_noise", original)
    with pytest.raises(OutputExistsError, match="resume"):
        finetune(_config(base_model, split), progress=False)
    finetune(_config(base_model, split), resume=True, progress=False)
    a, b = _weights(straight / "model"), _weights(split / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ema_a, ema_b = _weights(straight / "model", "ema"), _weights(split / "model", "ema")
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)

    def lines(run, name):
        return [
            {k: v for k, v in json.loads(ln).items() if k != "seconds"}
            for ln in (run / name).read_text().splitlines()
        ]

    assert lines(straight, "metrics.jsonl") == lines(split, "metrics.jsonl")
    assert lines(straight, "evals.jsonl") == lines(split, "evals.jsonl")


def test_finetuning_lowers_the_held_out_residual(base_model, tmp_path):
    cfg = _config(
        base_model,
        tmp_path / "run",
        iterations=40,
        batch_size=8,
        sampler=SamplerConfig(steps=10),
        lr=1e-4,
        lr_schedule="constant",
        eval=EvalConfig(every=10, n=16, n_reference=32),
        # the composite guard only: this tiny model lowers its residual partly by shrinking u (u's
        # amplitude error 0.014 -> 0.18), which the per-channel guard refuses (tests/test_guard.py)
        regularization=RegularizationConfig(
            ema_halflife_samples=64.0, fidelity_tolerance=0.2, channel_tolerance=1e9
        ),
    )
    result = finetune(cfg, progress=False)
    chosen, base = result.selected["chosen"], result.selected["base"]
    assert chosen["residual"] < 0.5 * base["residual"], result.selected
    _, record = load_denoiser(tmp_path / "run" / "model")
    assert record["stage"] == "finetune" and record["selection"]["chosen"] == chosen


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_every_method_keeps_the_contract(base_model, tmp_path, method):
    """Runs, logs finite rewards, writes a model that loads like the base, records its selection."""
    cfg = _config(base_model, tmp_path / method, method=method, iterations=2, **PRESETS_KW.get(method, {}))
    result = finetune(cfg, progress=False)
    rows = [json.loads(ln) for ln in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["reward"]) and r["reward"] < 0 for r in rows)
    model, record = load_denoiser(tmp_path / method / "model", expect={"pde": "poisson", "method": method})
    assert result.selected["chosen"]["weights"] and record["resolution"] == 16
    x = torch.randn(1, 2, 16, 16)
    assert model(x, torch.ones(1)).shape == x.shape


PRESETS_KW = {"draft": {"sampler": SamplerConfig(steps=3)}, "alignprop": {"sampler": SamplerConfig(steps=3)}}


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_every_method_keeps_the_contract_on_a_flow_model(tiny_poisson_flow_model, tmp_path, method):
    """The same contract with a rectified-flow base (policy rollouts on the flow SDE, 21 steps:
    the SDE at a = 0.7 is unstable on coarser grids)."""
    kw = PRESETS_KW.get(method, {}) | {
        "policy": PolicyConfig(**PRESETS.get(method, {}).get("policy", {}) | {"steps": 21})
    }
    cfg = _config(tiny_poisson_flow_model, tmp_path / method, method=method, iterations=2, **kw)
    result = finetune(cfg, progress=False)
    rows = [json.loads(ln) for ln in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["reward"]) and r["reward"] < 0 for r in rows)
    model, record = load_denoiser(tmp_path / method / "model", expect={"pde": "poisson", "method": method})
    assert (
        isinstance(model, FlowDenoiser)
        and record["model"]["kind"] == "flow"
        and result.selected["chosen"]["weights"]
    )


def test_a_black_box_reward_is_refused_by_first_order_methods_and_taken_by_zeroth_order_ones(
    base_model, tmp_path
):
    opaque = RewardConfig(black_box=True)
    with pytest.raises(ConfigError, match=r"(?s)pirf differentiates the reward.*ddpo, grpo, rwr"):
        finetune(_config(base_model, tmp_path / "a", reward=opaque), progress=False)
    result = finetune(
        _config(base_model, tmp_path / "b", method="rwr", iterations=2, reward=opaque), progress=False
    )
    assert math.isfinite(result.selected["chosen"]["residual"])


def test_anchors_a_method_does_not_hold_are_said_and_change_nothing(base_model, tmp_path, capsys):
    anchored = RegularizationConfig(
        ema_halflife_samples=8.0, alphas=(0.5,), anchor_fixed_channels=10.0, anchor_spectrum=5.0
    )
    finetune(
        _config(base_model, tmp_path / "a", method="rwr", iterations=2, regularization=anchored),
        progress=True,
    )
    said = capsys.readouterr().out
    assert "rwr does not use regularization.anchor_fixed_channels, regularization.anchor_spectrum" in said
    finetune(_config(base_model, tmp_path / "b", method="rwr", iterations=2), progress=False)
    with_anchors, without = _weights(tmp_path / "a" / "model"), _weights(tmp_path / "b" / "model")
    assert all(torch.equal(with_anchors[k], without[k]) for k in without)
    finetune(_config(base_model, tmp_path / "c", iterations=1, regularization=anchored), progress=True)
    assert "does not use" not in capsys.readouterr().out  # pirf holds them


def test_bad_configs_are_clear_errors(base_model, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown fine-tuning method 'pirff'"):
        finetune(_config(base_model, tmp_path / "a", method="pirff"), progress=False)
    with pytest.raises(ConfigError, match=r"truncation\.k = 9"):
        finetune(_config(base_model, tmp_path / "b", truncation=TruncationConfig(k=9)), progress=False)
    with pytest.raises(ConfigError, match="positive"):
        finetune(_config(base_model, tmp_path / "c", iterations=0), progress=False)


def test_method_sections_tune_one_method_only(tmp_path):
    """A config's ``methods.<M>`` section beats M's preset and leaves the other methods alone."""
    cfg_file = tmp_path / "tuned.yaml"
    cfg_file.write_text("lr: 2.0e-4\nmethods:\n  pirf: {truncation: {k: 3}}\n  draft-k: {lr: 5.0e-5}\n")
    pirf = resolve_finetune_config("darcy", "pirf", cfg_file)
    assert (pirf.truncation.k, pirf.lr, pirf.layers) == (3, 2e-4, "high-res")
    draft_k = resolve_finetune_config("darcy", "draft-k", cfg_file)
    assert (draft_k.truncation.k, draft_k.lr, draft_k.layers) == (1, 5e-5, "all")
    assert resolve_finetune_config("darcy", "pirf", cfg_file, ["truncation.k=2"]).truncation.k == 2
    shipped = resolve_finetune_config("darcy", "pirf")  # the shipped Darcy config tunes PIRF's window
    assert shipped.truncation.k != PRESETS["pirf"]["truncation"]["k"]
    assert resolve_finetune_config("darcy", "draft-k").truncation.k == PRESETS["draft-k"]["truncation"]["k"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: {pirff: {lr: 1.0}}\n")
    with pytest.raises(ConfigError, match=r"(?s)unknown fine-tuning method 'pirff'.*did you mean 'pirf'"):
        resolve_finetune_config("darcy", None, bad)


@pytest.mark.parametrize("name", packaged_configs("finetune"))
def test_shipped_finetune_configs_resolve_for_every_method(name):
    benchmark = name.removesuffix("-gpu")
    assert benchmark in pdes.names()
    for method in PRESETS:
        cfg = resolve_finetune_config(benchmark, method, name)
        assert (cfg.method, cfg.base) == (method, benchmark)
        if "truncation" in PRESETS[method]:
            assert cfg.truncation.mode == PRESETS[method]["truncation"]["mode"]
        for section, values in PRESETS[method].items():
            if isinstance(values, dict) and section != "truncation":
                assert all(getattr(getattr(cfg, section), k) == v for k, v in values.items()), section


def _metric_rows(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _f_change(base_model, run) -> float:
    """Mean squared change of the source f in the fine-tuned denoiser against the base's, at
    sigma = 0.5 from fixed random states."""
    model_b, model_a = load_denoiser(base_model)[0], load_denoiser(run / "model", weights="model")[0]
    x = torch.randn(4, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    sigma = torch.full((4,), 0.5)
    with torch.no_grad():
        return float((model_a(x, sigma)[:, 0] - model_b(x, sigma)[:, 0]).pow(2).mean())


def test_anchor_holds_the_channels_the_reward_cannot_move(base_model, tmp_path):
    """Poisson's reward moves u only; the anchor keeps f near what the base model makes."""

    free = tmp_path / "free"
    finetune(_config(base_model, free, lr=3e-3, iterations=6), progress=False)
    held = tmp_path / "held"
    reg = RegularizationConfig(anchor_fixed_channels=100.0, ema_halflife_samples=8.0, alphas=(0.5,))
    finetune(_config(base_model, held, lr=3e-3, iterations=6, regularization=reg), progress=False)
    rows = _metric_rows(held)
    assert all("anchor_drift" in r for r in rows) and "anchor_drift" not in _metric_rows(free)[0]
    assert rows[0]["anchor_drift"] < 1e-10  # first step: the weights are the base weights
    assert _f_change(base_model, held) < 0.5 * _f_change(base_model, free)


def test_chain_anchor_holds_fixed_channels_before_the_window(base_model, tmp_path):
    """The chain anchor compares the fixed channel of both denoisers at a step before the window:
    zero while the weights are the base's, and it keeps f's denoiser near the base's at a noise
    level the window never visits (sigma = 0.5)."""
    free = tmp_path / "free"
    finetune(_config(base_model, free, lr=3e-3, iterations=6), progress=False)
    held = tmp_path / "chain"
    reg = RegularizationConfig(anchor_chain=100.0, ema_halflife_samples=8.0, alphas=(0.5,))
    finetune(_config(base_model, held, lr=3e-3, iterations=6, regularization=reg), progress=False)
    logged = _metric_rows(held)
    assert all("chain_anchor_drift" in r and "anchor_drift" not in r for r in logged)
    assert "chain_anchor_drift" not in _metric_rows(free)[0]
    assert logged[0]["chain_anchor_drift"] < 1e-10  # first step: the weights are the base weights
    assert max(r["chain_anchor_drift"] for r in logged) > 0
    assert _f_change(base_model, held) < 0.5 * _f_change(base_model, free)


def test_whitened_anchor_sees_fine_scales_a_pixel_mse_misses():
    """A red field (power ~ k^-4) rewritten only at its finest scales: the plain anchor barely
    moves, the whitened one counts the rewritten shells at full weight; equal fields cost 0 and
    the gradient reaches the fields."""
    g = torch.Generator().manual_seed(0)
    k = torch.fft.fftfreq(32, 1 / 32)
    radius = torch.hypot(k[:, None], k[None, :])
    filt = 1 / (1 + radius) ** 2
    base = torch.fft.ifft2(torch.fft.fft2(torch.randn(4, 2, 32, 32, generator=g)) * filt).real
    fine = torch.fft.ifft2(torch.fft.fft2(torch.randn(4, 2, 32, 32, generator=g)) * (radius > 12) * filt).real
    moved = (base + fine).requires_grad_(True)
    fixed = torch.tensor([True, False])
    plain, white = fixed_difference(moved, base, fixed, False), fixed_difference(moved, base, fixed, True)
    relative_plain = plain.detach() / base[:, :1].pow(2).mean(dim=(1, 2, 3))
    assert float(relative_plain.max()) < 0.05  # the fine scales hold a few % of the power
    shells_moved = int((torch.arange(int(radius.max().round()) + 1) > 12).sum())
    share = shells_moved / (int(radius.max().round()) + 1)
    assert float(white.detach().min()) > 0.3 * share  # each rewritten shell counts ~1 (its own power)
    assert float((white.detach() / relative_plain).min()) > 10
    assert float(fixed_difference(base, base, fixed, True).max()) == 0.0
    white.sum().backward()
    assert moved.grad is not None and float(moved.grad[:, 0].abs().sum()) > 0
    assert float(moved.grad[:, 1].abs().sum()) == 0  # only the fixed channel is compared


# -- a method from outside the package: one class, one builder, one registration line ----------------
class LastStepBackprop:
    """Reward backprop through the final Heun step only, with a plain MSE loss (a user's method)."""

    name, needs_differentiable_reward, needs_reference, group_size = "last-step", True, False, 1

    def updates(self, rollout):
        from pirf.sampling import sample_heun

        x0 = sample_heun(rollout.denoiser, rollout.noise, rollout.sigmas, grad_steps=1).x0
        mse = -rollout.reward(rollout.normalization.denormalize(x0))
        yield mse.mean(), {"residual_mse": mse.detach()}


def test_a_method_registered_from_outside_the_package_runs_in_the_loop(base_model, tmp_path):
    from pirf.finetune import METHODS, Method, register_method
    from pirf.finetune.config import resolve_finetune_config

    built = []

    def build(cfg, model_kind, sigma_data):
        built.append((cfg.method, cfg.lr, model_kind))
        return type("LastStep", (LastStepBackprop, Method), {})()

    register_method("last-step", build, preset={"lr": 5e-4})
    try:
        cfg = resolve_finetune_config(str(base_model), "last-step", None, [f"out={tmp_path / 'run'}"])
        assert cfg.lr == 5e-4  # the preset applies like a built-in method's
        result = finetune(
            _config(base_model, tmp_path / "run", method="last-step", iterations=2), progress=False
        )
        assert built == [("last-step", 1e-3, "edm")] and result.iterations == 2
        record = json.loads((tmp_path / "run" / "model.json").read_text())
        assert record["method"] == "last-step"
        with pytest.raises(ValueError, match="already registered"):
            register_method("last-step", build)
    finally:
        METHODS.pop("last-step", None)
        from pirf.finetune.presets import PRESETS

        PRESETS.pop("last-step", None)


def test_the_sigma_window_means_the_same_noise_levels_at_every_step_count():
    from pirf.finetune.config import TruncationConfig
    from pirf.finetune.methods import RewardBackprop
    from pirf.sampling.draw import sigma_grid

    method = RewardBackprop(TruncationConfig(mode="sigma", sigma=0.045), "mse", "pirf")
    rng = np.random.default_rng(0)
    windows = {n: method.window(sigma_grid("edm", n, "heun"), rng) for n in (10, 20, 40, 80)}
    assert windows == {10: 2, 20: 4, 40: 7, 80: 13}
    for n, k in windows.items():  # the window's steps start at sigma <= 0.045, the one before above it
        grid = sigma_grid("edm", n, "heun")
        assert float(grid[n - k]) <= 0.045 < float(grid[n - k - 1])
    tiny = RewardBackprop(TruncationConfig(mode="sigma", sigma=1e-4), "mse", "pirf")
    assert tiny.window(sigma_grid("edm", 20, "heun"), rng) == 1  # never an empty window


def test_one_fine_tune_across_step_counts_draws_them_per_iteration(base_model, tmp_path):
    from pirf.finetune.config import TruncationConfig
    from pirf.finetune.seeds import iteration_steps

    sampler = SamplerConfig(steps=4, steps_choices=(3, 5, 8))
    window = TruncationConfig(mode="sigma", sigma=0.5)
    cfg = _config(base_model, tmp_path / "multi", sampler=sampler, truncation=window, iterations=6)
    finetune(cfg, progress=False)
    rows = [json.loads(ln) for ln in (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()]
    drawn = [iteration_steps(cfg.seed, i, (3, 5, 8)) for i in range(6)]
    assert [int(r["steps"]) for r in rows] == drawn and len(set(drawn)) > 1
    for row, n in zip(rows, drawn, strict=True):  # the window follows the noise levels, not the count
        grid = sigma_grid_of(n)
        assert int(row["window"]) == max(1, int((grid[:-1] <= 0.5).sum()))
    with pytest.raises(ConfigError, match="steps_choices"):
        finetune(_config(base_model, tmp_path / "ddpo", method="ddpo", sampler=sampler), progress=False)


def test_each_chain_is_held_to_the_base_at_its_own_step_count(base_model, tmp_path):
    """The divergence check compares an iteration's residual with the base model's at the same
    step count. A 2-step chain's residual is many times an 8-step one's; held to the 8-step
    yardstick, every short chain of a model that has barely moved read as divergence and was
    skipped (52 of 300 steps of a Poisson run, all of them 10-step chains)."""
    from pirf.models.checkpoint import read_checkpoint_config

    sampler = SamplerConfig(steps=8, steps_choices=(2, 8))
    cfg = _config(base_model, tmp_path / "run", sampler=sampler, lr=1e-9, iterations=6, divergence_factor=3.0)
    result = finetune(cfg, progress=False)
    state = read_checkpoint_config(tmp_path / "run" / "checkpoints" / "latest")["state"]
    short, full = state["base_residual_by_steps"]["2"], state["base_score"]["residual"]
    assert short > 3.0 * full, "the old yardstick would not have tripped: the test shows nothing"
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {int(r["steps"]) for r in rows} == {2, 8}
    assert result.bad_steps == 0


def sigma_grid_of(n):
    from pirf.sampling.draw import sigma_grid

    return sigma_grid("edm", n, "heun")
