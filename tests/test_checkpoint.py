"""Checkpoints: round trip, atomicity, checksum, foreign/corrupt files, fitting a model."""

import json

import pytest
import torch

from pirf.errors import DataFileError, ShapeError
from pirf.models.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    load_into,
    read_checkpoint_config,
    save_checkpoint,
)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Conv2d(4, 2, 1))


def test_round_trip(tmp_path, model):
    path = save_checkpoint(tmp_path / "ckpt", model.state_dict(), {"pde": "darcy", "step": 3})
    assert path.name == "ckpt.safetensors" and sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt.json",
        "ckpt.safetensors",
    ]
    tensors, config = load_checkpoint(tmp_path / "ckpt.safetensors", expect={"pde": "darcy"})
    assert config["step"] == 3 and config["format"] == "pirf-checkpoint" and len(config["sha256"]) == 64
    other = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Conv2d(4, 2, 1))
    load_into(other, tensors)
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
    assert read_checkpoint_config(tmp_path / "ckpt.json")["pde"] == "darcy"


def test_wrong_pde_truncated_and_mixed_up_files_are_refused(tmp_path, model):
    save_checkpoint(tmp_path / "a", model.state_dict(), {"pde": "darcy"})
    with pytest.raises(DataFileError, match="pde='darcy', expected 'poisson'"):
        load_checkpoint(tmp_path / "a", expect={"pde": "poisson"})
    weights, meta = checkpoint_paths(tmp_path / "a")
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match="checksum differs"):
        load_checkpoint(tmp_path / "a")
    meta.write_text("{not json")
    with pytest.raises(DataFileError, match="not valid JSON"):
        load_checkpoint(tmp_path / "a")
    meta.write_text(json.dumps({"hello": 1}))
    with pytest.raises(DataFileError, match="not a pirf checkpoint"):
        load_checkpoint(tmp_path / "a")
    with pytest.raises(DataFileError, match="no checkpoint record"):
        load_checkpoint(tmp_path / "missing")


def test_load_into_names_missing_unexpected_and_misshaped_keys(model):
    tensors = dict(model.state_dict())
    tensors["extra.weight"] = torch.zeros(1)
    tensors["1.weight"] = torch.zeros(3, 4, 1, 1)
    del tensors["0.bias"]
    with pytest.raises(ShapeError, match=r"missing: 0.bias; unexpected: extra.weight; wrong shape: 1.weight"):
        load_into(model, tensors)


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, model):
    save_checkpoint(tmp_path / "c", model.state_dict(), {"step": 1})
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "c", model.state_dict(), {"step": object()})  # not JSON-serializable
    assert load_checkpoint(tmp_path / "c")[1]["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]
