"""The spectrum anchor (`pirf.finetune.spectrum_anchor`): a distribution anchor on every channel.
Closed forms on known fields, the gradient's direction, and a fine-tune it holds."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from pirf.finetune import finetune
from pirf.finetune.config import EvalConfig, FinetuneConfig, RegularizationConfig, SamplerConfig
from pirf.finetune.spectrum_anchor import in_dex, log_shell_power, spectrum_anchor
from pirf.models.factory import load_denoiser
from pirf.sampling.draw import generate_samples


def _fields(seed: int, n: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.fft.fftfreq(32, 1 / 32)
    filt = 1 / (1 + torch.hypot(k[:, None], k[None, :]))  # a red field, power ~ k^-2
    return torch.fft.ifft2(
        torch.fft.fft2(torch.randn(n, 2, 32, 32, generator=g, dtype=torch.float64)) * filt
    ).real


def test_zero_on_the_target_and_a_scale_costs_its_log_squared():
    """A(x) = 0 for the fields that set the target; fields scaled by s cost (log s^2)^2 on every
    shell (shell 0 included: the mean is kept), i.e. |log10 s^2| dex."""
    x = _fields(0)
    target = log_shell_power(x)
    assert float(spectrum_anchor(x, target)) < 1e-20
    for scale in (0.5, 2.0, 0.14):
        cost = float(spectrum_anchor(scale * x, target))
        assert math.isclose(cost, math.log(scale**2) ** 2, rel_tol=1e-9)
        assert math.isclose(in_dex(cost), abs(math.log10(scale**2)), rel_tol=1e-9)


def test_only_the_distribution_is_held_not_each_sample():
    """Other draws of the same distribution cost little; a damped batch costs much more, and the
    gradient on the damping factor points back up."""
    target = log_shell_power(_fields(0, n=256))
    other = float(spectrum_anchor(_fields(1, n=256), target))
    assert other < 0.05  # sampling noise of a 256-sample spectrum estimate
    scale = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    damped = spectrum_anchor(scale * _fields(1, n=256), target)
    assert float(damped.detach()) > 20 * other
    damped.backward()
    assert scale.grad is not None and float(scale.grad) < 0  # raising the amplitude lowers A


def _spectrum_change(base_model, run) -> float:
    """The RMS log10-spectrum difference (dex) between the trained weights' and the base's
    samples, both channels, 32 samples from the same seeds."""
    spectra = []
    for model, record in (load_denoiser(base_model), load_denoiser(run / "model", weights="model")):
        fields = generate_samples(model, record, 32, 4, seed=7, progress=False).fields
        spectra.append(log_shell_power(torch.from_numpy(fields).to(torch.float64)))
    return in_dex(float((spectra[0] - spectra[1]).pow(2).mean()))


def test_the_anchor_holds_the_spectrum_through_a_fine_tune(tiny_poisson_model, tmp_path):
    """Fine-tuned hard (every layer, a high rate), the free model's spectrum moves; anchored, it
    moves less than half as far, and the logged anchor starts near the base's own sampling noise."""

    def config(out, reg):
        return FinetuneConfig(
            base=str(tiny_poisson_model),
            out=str(out),
            iterations=6,
            batch_size=4,
            lr=3e-3,
            layers="all",
            sampler=SamplerConfig(steps=4),
            warmup_iterations=1,
            log_every=1,
            checkpoint_every=3,
            eval=EvalConfig(every=3, n=8, n_reference=16),
            regularization=reg,
        )

    free, held = tmp_path / "free", tmp_path / "held"
    finetune(config(free, RegularizationConfig(ema_halflife_samples=8.0, alphas=(0.5,))), progress=False)
    reg = RegularizationConfig(anchor_spectrum=300.0, ema_halflife_samples=8.0, alphas=(0.5,))
    finetune(config(held, reg), progress=False)
    rows = [json.loads(line) for line in (held / "metrics.jsonl").read_text().splitlines()]
    assert all("spectrum_anchor" in r for r in rows)
    assert np.isfinite([r["spectrum_anchor"] for r in rows]).all()
    moved_free, moved_held = (
        _spectrum_change(tiny_poisson_model, free),
        _spectrum_change(tiny_poisson_model, held),
    )
    assert moved_free > 0.02, moved_free  # the free fine-tune does change the spectrum
    assert moved_held < 0.5 * moved_free, (moved_held, moved_free)
