"""Models: EDM denoisers and flow models behind one call, U-Net backbones, parameter selection.

``D(x, sigma) -> x0_hat`` is the only thing samplers and fine-tuners call (`DenoiserLike`).
"""

from pirf.models.backbone import PeriodicConv2d, UNetBackbone, UNetConfig, make_periodic, make_unet
from pirf.models.denoiser import (
    Denoiser,
    DenoiserLike,
    EDMDraw,
    FlowDenoiser,
    denoising_losses,
    edm_draw,
    edm_loss,
    flow_matching_loss,
    sigma_to_t,
    t_to_sigma,
)
from pirf.models.resolution_map import ModuleInfo, module_resolutions, parameter_owners, select_parameters

__all__ = [
    "Denoiser",
    "DenoiserLike",
    "EDMDraw",
    "FlowDenoiser",
    "ModuleInfo",
    "PeriodicConv2d",
    "UNetBackbone",
    "UNetConfig",
    "denoising_losses",
    "edm_draw",
    "edm_loss",
    "flow_matching_loss",
    "make_periodic",
    "make_unet",
    "module_resolutions",
    "parameter_owners",
    "select_parameters",
    "sigma_to_t",
    "t_to_sigma",
]
