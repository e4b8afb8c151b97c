"""Testing helpers: the exact test bed for reward fine-tuning (`pirf.testing.testbed`), Gaussian
mixtures whose KL-regularized optimum is known in closed form."""

from pirf.testing.distances import gaussian_kl, kl_monte_carlo, moments
from pirf.testing.finetuning import finetune_testbed
from pirf.testing.mixture import GaussianMixture
from pirf.testing.rewards import LinearReward, QuadraticReward
from pirf.testing.testbed import FLOW_T_MAX, MixtureBackbone, testbed_model, train_testbed_base

__all__ = [
    "FLOW_T_MAX",
    "GaussianMixture",
    "LinearReward",
    "MixtureBackbone",
    "QuadraticReward",
    "finetune_testbed",
    "gaussian_kl",
    "kl_monte_carlo",
    "moments",
    "testbed_model",
    "train_testbed_base",
]
