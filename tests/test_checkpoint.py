"""Checkpoints: round trip, atomicity, checksum, foreign/corrupt files, fitting a model."""

import json
import shutil

import pytest
import torch

import pirf
from pirf import cli
from pirf.errors import ConfigError, DataFileError, ShapeError
from pirf.models.checkpoint import (
    FORMAT_VERSION,
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


def _rewrite_record(path, **changes):
    meta = checkpoint_paths(path)[1]
    meta.write_text(json.dumps(json.loads(meta.read_text()) | changes))


def test_a_newer_pirf_or_format_is_refused_with_upgrade(tmp_path, model):
    major, minor = (int(v) for v in pirf.__version__.split(".")[:2])
    save_checkpoint(tmp_path / "c", model.state_dict(), {"step": 1})
    for newer in ({"pirf_version": f"{major}.{minor + 1}.0"}, {"pirf_version": f"{major + 1}.0.0"}):
        _rewrite_record(tmp_path / "c", **newer)
        with pytest.raises(DataFileError, match=f"written by pirf {newer['pirf_version']}") as err:
            load_checkpoint(tmp_path / "c")
        assert "upgrade pirf" in err.value.fix
    _rewrite_record(tmp_path / "c", pirf_version=pirf.__version__, format_version=FORMAT_VERSION + 1)
    with pytest.raises(DataFileError, match="upgrade pirf"):
        read_checkpoint_config(tmp_path / "c")
    _rewrite_record(tmp_path / "c", pirf_version="0.0.1", format_version=FORMAT_VERSION)  # older: fine
    assert load_checkpoint(tmp_path / "c")[1]["step"] == 1
    for damaged in ({"pirf_version": "soon"}, {"format_version": "1"}):
        _rewrite_record(tmp_path / "c", **({"pirf_version": "0.0.1", "format_version": 1} | damaged))
        with pytest.raises(DataFileError, match="names no valid checkpoint format and pirf version"):
            load_checkpoint(tmp_path / "c")


def test_load_into_refuses_a_wrong_dtype(model):
    tensors = dict(model.state_dict())
    tensors["0.weight"] = tensors["0.weight"].half()
    with pytest.raises(ShapeError, match=r"wrong dtype: 0.weight \(float16, not float32\)"):
        load_into(model, tensors)


@pytest.fixture
def model_copy(rough_poisson_model, tmp_path):
    """A copy of the rough 16x16 Poisson model whose record a test may rewrite."""
    pairs = zip(checkpoint_paths(rough_poisson_model), checkpoint_paths(tmp_path / "model"), strict=True)
    for source, target in pairs:
        shutil.copy(source, target)
    return tmp_path / "model.safetensors"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pde": "darcy"}, r"fields \['f', 'u'\], but darcy has \['a', 'u'\]"),
        ({"pde": "burgers", "pde_params": {}}, r"fields \['f', 'u'\], but burgers has \['u'\]"),
        ({"resolution": 32}, "says resolution 32, but the weights are a 16x16 model"),
        ({"fields": ["a", "u"]}, r"fields \['a', 'u'\], but poisson has \['f', 'u'\]"),
        ({"normalization": {"shift": [0.0], "scale": [1.0]}}, "normalization has 1 channel"),
    ],
)
def test_a_record_of_another_pde_resolution_or_fields_is_refused(model_copy, changes, message):
    from pirf.models.loading import load_model

    load_model(model_copy)  # intact: loads
    _rewrite_record(model_copy, **changes)
    with pytest.raises(DataFileError, match=message) as err:
        load_model(model_copy)
    assert err.value.fix


def test_sample_of_a_mislabelled_model_exits_2_and_writes_nothing(model_copy, tmp_path, capsys):
    _rewrite_record(model_copy, pde="darcy")
    with pytest.raises(SystemExit) as exc:
        cli.main(["sample", str(model_copy), "--out", str(tmp_path / "out"), "--n", "2", "--steps", "2"])
    err = " ".join(capsys.readouterr().err.split())
    assert exc.value.code == 2 and "but darcy has ['a', 'u']" in err and "fix:" in err
    assert not (tmp_path / "out").exists()


def test_a_shipped_model_for_another_pde_is_refused(model_copy, monkeypatch):
    """`pirf sample poisson` loads the shipped Poisson model, and nothing else."""
    from pirf.models import loading

    _rewrite_record(model_copy, pde="darcy")
    monkeypatch.setattr(loading, "zoo_model", lambda name: model_copy)
    with pytest.raises(DataFileError, match="pde='darcy', expected 'poisson'") as err:
        loading.load_model("poisson")
    assert "pde='poisson'" in err.value.fix


def test_finetune_refuses_a_base_of_another_pde(rough_poisson_model):
    from pirf.finetune.config import resolve_finetune_config

    with pytest.raises(ConfigError, match="is a poisson model, but --config darcy is tuned for darcy") as err:
        resolve_finetune_config(str(rough_poisson_model), None, "darcy")
    assert f"pirf finetune {rough_poisson_model}" in err.value.fix
    with pytest.raises(ConfigError, match=r"is a poisson model, but BASE 'darcy' \(its shipped settings\)"):
        resolve_finetune_config("darcy", None, None, [f"base={rough_poisson_model}"])
    assert resolve_finetune_config(str(rough_poisson_model), None, "poisson").base == str(rough_poisson_model)


def test_pretrain_from_a_model_of_another_pde_is_refused(rough_poisson_model, tmp_path):
    from pirf import data, pdes
    from pirf.training import DataConfig, PretrainConfig, pretrain

    darcy = tmp_path / "darcy.h5"
    data.generate_dataset(pdes.get("darcy"), 2, darcy, resolution=16, progress=False)
    cfg = PretrainConfig(
        data=DataConfig(path=str(darcy)), out=str(tmp_path / "run"), init=str(rough_poisson_model)
    )
    with pytest.raises(ConfigError, match=r"trained on poisson at 16 .* is darcy at 16") as err:
        pretrain(cfg, progress=False)
    assert err.value.fix and not (tmp_path / "run").exists()
