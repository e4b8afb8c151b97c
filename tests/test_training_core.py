"""The pieces every training loop shares (`pirf.training`): the one learning-rate schedule, the
guarded optimizer step and the cadence of periodic actions."""

import math

import pytest
import torch

from pirf.errors import ConfigError
from pirf.training.engine import make_accelerator
from pirf.training.schedule import due, learning_rate
from pirf.training.steps import guarded_step


def _old_pretrain_rate(lr, schedule, warmup, steps, final, s):
    """Pretraining's schedule as it was written before the shared function (`_learning_rate`)."""
    ramp = min(1.0, (s + 1) / max(1, warmup))
    if schedule == "constant" or s < warmup:
        return lr * ramp
    progress = (s - warmup) / max(1, steps - 1 - warmup)
    return lr * (final + (1 - final) * (1 + math.cos(math.pi * min(1.0, progress))) / 2)


def _old_finetune_rate(lr, schedule, warmup, iterations, i):
    """Fine-tuning's schedule as it was written before the shared function (`learning_rate`)."""
    warm = min(1.0, (i + 1) / max(1, warmup))
    if schedule == "constant":
        return lr * warm
    progress = i / max(1, iterations)
    return lr * warm * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize(("warmup", "steps", "final"), [(0, 1, 0.05), (10, 101, 0.1), (100, 3000, 0.05)])
def test_the_one_schedule_is_pretrainings_bit_for_bit(schedule, warmup, steps, final):
    for s in sorted({0, 1, warmup // 2, max(warmup - 1, 0), warmup, warmup + 1, steps // 2, steps - 1}):
        new = learning_rate(
            s,
            lr=1e-3,
            schedule=schedule,
            warmup=warmup,
            decay_start=warmup,
            decay_end=steps - 1,
            final=final,
        )
        assert new == _old_pretrain_rate(1e-3, schedule, warmup, steps, final, s), s


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize(("warmup", "iterations"), [(0, 1), (10, 40), (10, 7), (5, 300)])
def test_the_one_schedule_is_finetunings_bit_for_bit(schedule, warmup, iterations):
    for i in sorted({0, 1, warmup // 2, max(warmup - 1, 0), warmup, iterations // 2, iterations - 1}):
        if i >= iterations:
            continue
        new = learning_rate(i, lr=3e-5, schedule=schedule, warmup=warmup, decay_end=iterations)
        assert new == _old_finetune_rate(3e-5, schedule, warmup, iterations, i), i


def test_the_one_schedule_is_cosine_annealing_in_closed_form():
    """The test bed's base training: torch's CosineAnnealingLR (a recursion) to round-off."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.05)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 50)
    for s in range(50):
        assert learning_rate(s, lr=0.05, schedule="cosine", decay_end=50) == pytest.approx(
            optimizer.param_groups[0]["lr"], rel=1e-12, abs=1e-15
        )
        optimizer.step()
        annealing.step()


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ConfigError, match="'linear'"):
        learning_rate(0, lr=1.0, schedule="linear", decay_end=10)


def test_periodic_actions_are_due_every_n_steps_and_at_the_end():
    assert [d for d in range(1, 11) if due(d, 4, 10)] == [4, 8, 10]


def _quadratic(scale=1.0):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(8, 3)
    return model, optimizer, (model(x) ** 2).mean() * scale


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_non_finite_loss_or_gradient_moves_nothing(bad, where):
    model, optimizer, loss = _quadratic()
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    if where == "loss":
        loss = loss * bad
    else:
        params[0].register_hook(lambda grad: grad * bad)  # a finite loss, a non-finite gradient
    stepped, grad_norm = guarded_step(optimizer, params, loss, clip=1.0)
    assert not stepped and math.isnan(grad_norm)
    assert all(torch.equal(p, q) for p, q in zip(params, before, strict=True))
    assert all(p.grad is None for p in params) and optimizer.state == {}  # Adam's moments untouched


def test_a_good_step_clips_and_reports_the_norm_before_clipping():
    model, optimizer, loss = _quadratic(scale=1e6)
    params = list(model.parameters())
    outcome = guarded_step(optimizer, params, loss, clip=1.0)
    assert outcome.stepped and outcome.grad_norm > 1.0
    assert float(torch.cat([p.grad.reshape(-1) for p in params]).norm()) == pytest.approx(1.0, rel=1e-5)
    model, optimizer, loss = _quadratic()
    stepped, grad_norm = guarded_step(optimizer, list(model.parameters()), loss, 0.0, measure_norm=False)
    assert stepped and math.isnan(grad_norm)  # not measured


def test_the_two_gradient_strategies_agree_on_one_process():
    """Pretraining's DDP path (accelerate's backward and clip) and fine-tuning's explicit
    all-reduce step to the same weights where there is one process."""
    weights = []
    for sync in ("ddp", "all-reduce"):
        model, optimizer, loss = _quadratic(scale=10.0)
        guarded_step(optimizer, list(model.parameters()), loss, 0.5, make_accelerator(), sync=sync)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))
    with pytest.raises(ConfigError, match="accelerator"):
        guarded_step(optimizer, list(model.parameters()), loss, 0.5, sync="ddp")
