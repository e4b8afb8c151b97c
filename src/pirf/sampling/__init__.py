"""Sampling: noise-level grids, samplers with a gradient window and per-step records, and the one
seeded draw of a trained model (`pirf.sampling.draw`).

Samplers take any ``denoiser(x [B, C, H, W], sigma [B]) -> x0_hat`` in the EDM convention
x = x0 + sigma * eps (a flow model is wrapped with sigma = t / (1 - t)), unit-variance
``noise`` and a decreasing ``sigmas`` grid, and return a `SampleOutput`.
"""

from pirf.sampling.chain import DenoiserFn, SampleOutput, StepRecord, grad_window, per_sample_noise, run_chain
from pirf.sampling.draw import SAMPLERS, Samples, SampleStream, generate_samples, sample_seed, sigma_grid
from pirf.sampling.samplers import sample_euler, sample_heun
from pirf.sampling.schedules import flow_sigmas, karras_sigmas, sigma_to_t, t_to_sigma
from pirf.sampling.stochastic import (
    TRANSITIONS,
    Transition,
    ddim_transition,
    flow_sde_transition,
    recompute_log_prob,
    recompute_transition,
    sample_ddim,
    sample_flow_sde,
    step_log_prob,
)
from pirf.sampling.value import VALUE_MODES, RewardValue, check_value_settings, sample_value_guided

__all__ = [
    "SAMPLERS",
    "TRANSITIONS",
    "VALUE_MODES",
    "DenoiserFn",
    "RewardValue",
    "SampleOutput",
    "SampleStream",
    "Samples",
    "StepRecord",
    "Transition",
    "check_value_settings",
    "ddim_transition",
    "flow_sde_transition",
    "flow_sigmas",
    "generate_samples",
    "grad_window",
    "karras_sigmas",
    "per_sample_noise",
    "recompute_log_prob",
    "recompute_transition",
    "run_chain",
    "sample_ddim",
    "sample_euler",
    "sample_flow_sde",
    "sample_heun",
    "sample_seed",
    "sample_value_guided",
    "sigma_grid",
    "sigma_to_t",
    "step_log_prob",
    "t_to_sigma",
]
