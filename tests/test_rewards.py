"""Rewards declared in a config (`RewardConfig.source`, `black_box`, `make_reward`): the residual
by default, registered names, import paths, black-box wrapping without gradients, clear errors."""

import re
import textwrap
import uuid

import numpy as np
import pytest
import torch

import pirf.pdes as pdes
from pirf.config import from_dict
from pirf.errors import ConfigError
from pirf.rewards import (
    BlackBoxReward,
    ResidualReward,
    Reward,
    RewardConfig,
    make_reward,
    register_reward,
    registered_rewards,
    unregister_reward,
)

POISSON = pdes.get("poisson")


def fields(batch: int = 3, seed: int = 0, grad: bool = False) -> torch.Tensor:
    x = torch.randn(batch, 2, 16, 16, generator=torch.Generator().manual_seed(seed))
    return x.requires_grad_(grad)


def energy(x: np.ndarray) -> np.ndarray:
    return -(x**2).mean(axis=(1, 2, 3))


class Smoothness(Reward):
    """A differentiable user reward: minus the mean squared horizontal difference."""

    def __call__(self, x):
        return -(x[..., 1:] - x[..., :-1]).pow(2).mean(dim=(1, 2, 3))


@pytest.fixture
def registered():
    names = {"energy": lambda pde: energy, "smoothness": lambda pde: Smoothness()}
    for name, factory in names.items():
        register_reward(name, factory)
    yield names
    for name in names:
        unregister_reward(name)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's reward module, importable under a fresh name from a folder on sys.path."""
    name = f"user_rewards_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from pirf.rewards import ResidualReward

            def energy(pde):
                return lambda x: -(np.asarray(x) ** 2).mean(axis=(1, 2, 3))

            def residual(pde):
                return ResidualReward(pde)

            class Factories:
                @staticmethod
                def energy(pde):
                    return energy(pde)

            NOT_CALLABLE = 3

            def number(pde):
                return 42

            def no_argument():
                return energy
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# -- what make_reward builds ----------------------------------------------------------------------------
def test_default_is_the_residual_reward():
    reward = make_reward(POISSON, RewardConfig())
    assert isinstance(reward, ResidualReward) and reward.differentiable
    torch.testing.assert_close(reward(fields()), ResidualReward(POISSON)(fields()))
    assert make_reward(POISSON).describe()["type"] == "residual"


def test_registered_rewards(registered):
    assert {"energy", "smoothness"} <= set(registered_rewards())
    numpy_reward = make_reward(POISSON, RewardConfig(source="energy"))
    assert isinstance(numpy_reward, BlackBoxReward) and not numpy_reward.differentiable
    np.testing.assert_allclose(numpy_reward(fields()).numpy(), energy(fields().numpy()), rtol=1e-6)
    torch_reward = make_reward(POISSON, RewardConfig(source="smoothness"))
    assert isinstance(torch_reward, Smoothness) and torch_reward.differentiable  # a Reward is used as is
    with pytest.raises(ConfigError, match="already registered"):
        register_reward("energy", lambda pde: energy)
    register_reward("energy", registered["energy"])  # the same factory again is fine
    with pytest.raises(ConfigError, match="without ':'"):
        register_reward("a:b", lambda pde: energy)


def test_import_paths(user_module):
    numpy_reward = make_reward(POISSON, RewardConfig(source=f"{user_module}:energy"))
    assert isinstance(numpy_reward, BlackBoxReward) and not numpy_reward.differentiable
    assert numpy_reward.describe() == {"type": "black-box", "name": f"{user_module}:energy"}
    np.testing.assert_allclose(numpy_reward(fields()).numpy(), energy(fields().numpy()), rtol=1e-6)
    nested = make_reward(POISSON, RewardConfig(source=f"{user_module}:Factories.energy"))
    torch.testing.assert_close(nested(fields()), numpy_reward(fields()))
    residual = make_reward(POISSON, RewardConfig(source=f"{user_module}:residual"))
    assert isinstance(residual, ResidualReward) and residual.differentiable


def test_black_box_gives_the_same_numbers_without_gradient(user_module):
    x = fields(grad=True)
    reference = ResidualReward(POISSON)(x)
    for source in (None, f"{user_module}:residual"):
        reward = make_reward(POISSON, RewardConfig(source=source, black_box=True))
        assert isinstance(reward, BlackBoxReward) and reward.differentiable is False
        value = reward(x)
        torch.testing.assert_close(value, reference.detach(), rtol=1e-6, atol=0)
        assert not value.requires_grad and value.grad_fn is None
    assert reward.describe()["wraps"]["type"] == "residual"
    plain = make_reward(POISSON, RewardConfig(black_box=True, channels=("all",), project=False))
    torch.testing.assert_close(
        plain(x), ResidualReward(POISSON, RewardConfig(channels=("all",), project=False))(x).detach()
    )
    numpy_reward = make_reward(POISSON, RewardConfig(source=f"{user_module}:energy", black_box=True))
    assert isinstance(numpy_reward, BlackBoxReward) and "wraps" not in numpy_reward.describe()


def test_config_files_read_the_new_keys():
    cfg = from_dict(RewardConfig, {"source": "pkg.mod:fn", "black_box": True})
    assert cfg == RewardConfig(source="pkg.mod:fn", black_box=True)
    with pytest.raises(ConfigError, match="black_box"):
        from_dict(RewardConfig, {"black_box": "yes"})


# -- errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("energi", "did you mean 'energy'"),
        ("nothing_like_it", "registered: energy, paper-form, pirf-form, smoothness"),
        ("my_pkg.rewards.energy", "e.g. 'my_pkg.rewards:energy'"),
        ("{mod}:", "'package.module:attribute'"),
        (":energy", "'package.module:attribute'"),
        ("no_such_module_4b1d:energy", "cannot import module 'no_such_module_4b1d'"),
        ("{mod}:enrgy", "did you mean 'energy'"),
        ("{mod}:Factories.nothing", "has no attribute 'Factories.nothing'"),
        ("{mod}:NOT_CALLABLE", "is not callable (type int)"),
        ("{mod}:number", "returned type int"),
        ("{mod}:no_argument", "cannot be called as factory(pde)"),
    ],
)
def test_bad_sources_are_clear_errors(registered, user_module, source, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        make_reward(POISSON, RewardConfig(source=source.format(mod=user_module)))
    assert err.value.fix  # every error says what to fix


def test_module_failing_on_import_is_reported(tmp_path, monkeypatch):
    (tmp_path / "broken_rewards_9c2e.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="RuntimeError: boom"):
        make_reward(POISSON, RewardConfig(source="broken_rewards_9c2e:energy"))


def test_residual_settings_with_a_source_are_refused(registered):
    with pytest.raises(ConfigError, match="drop them"):
        make_reward(POISSON, RewardConfig(source="energy", weights={"boundary": 2.0}))
