"""Sampling: noise-level grids and samplers with a gradient window and per-step records.

Samplers take any ``denoiser(x [B, C, H, W], sigma [B]) -> x0_hat`` in the EDM convention
x = x0 + sigma * eps (a flow model is wrapped with sigma = t / (1 - t)), unit-variance
``noise`` and a decreasing ``sigmas`` grid, and return a `SampleOutput`.
"""

from pirf.sampling.samplers import (
    DenoiserFn,
    SampleOutput,
    grad_window,
    per_sample_noise,
    sample_euler,
    sample_heun,
)
from pirf.sampling.schedules import flow_sigmas, karras_sigmas, sigma_to_t, t_to_sigma
from pirf.sampling.stochastic import (
    TRANSITIONS,
    StepRecord,
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

SAMPLERS = {"euler": sample_euler, "heun": sample_heun, "ddim": sample_ddim, "flow_sde": sample_flow_sde}

__all__ = [
    "SAMPLERS",
    "TRANSITIONS",
    "VALUE_MODES",
    "DenoiserFn",
    "RewardValue",
    "SampleOutput",
    "StepRecord",
    "Transition",
    "check_value_settings",
    "ddim_transition",
    "flow_sde_transition",
    "flow_sigmas",
    "grad_window",
    "karras_sigmas",
    "per_sample_noise",
    "recompute_log_prob",
    "recompute_transition",
    "sample_ddim",
    "sample_euler",
    "sample_flow_sde",
    "sample_heun",
    "sample_value_guided",
    "sigma_to_t",
    "step_log_prob",
    "t_to_sigma",
]
