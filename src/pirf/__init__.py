"""pirf: reward fine-tuning of diffusion and flow models on physical fields."""

__version__ = "0.1.0"
