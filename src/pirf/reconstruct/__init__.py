"""Inverse and forward problems: fields reconstructed from sparse observations with a diffusion
prior (`pirf reconstruct`): observation plans, reconstruction methods (DiffusionPDE's guidance,
hard projection), scores and outputs."""

from pirf.reconstruct.methods import METHODS, Guidance, Observations, Projection
from pirf.reconstruct.observe import ObservationPlan
from pirf.reconstruct.report import RECONSTRUCTION_FILES, reconstruct, write_reconstruction
from pirf.reconstruct.runner import Reconstruction, channel_errors, run_reconstruction

__all__ = [
    "METHODS",
    "RECONSTRUCTION_FILES",
    "Guidance",
    "ObservationPlan",
    "Observations",
    "Projection",
    "Reconstruction",
    "channel_errors",
    "reconstruct",
    "run_reconstruction",
    "write_reconstruction",
]
