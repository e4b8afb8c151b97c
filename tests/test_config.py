"""pirf.config: typed dataclass configs from YAML + ``key.sub=value`` overrides."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pirf.config import (
    apply_overrides,
    deep_merge,
    dump_yaml,
    from_dict,
    load_config,
    parse_value,
    read_yaml,
    save_config,
    to_dict,
)
from pirf.errors import ConfigError


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    betas: tuple[float, ...] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    channels: tuple[int, ...] = (32, 64)
    kind: Literal["edm", "flow"] = "edm"
    periodic: bool = False
    name: str = "unet"


@dataclass
class Inner:
    depth: int = 2
    opts: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    steps: int = 100
    out: Path = Path("runs/x")
    init: Path | None = None
    tags: list[str] = field(default_factory=list)
    pair: tuple[int, str] = (1, "a")
    extra: dict[str, Any] = field(default_factory=dict)
    sections: list[Inner] = field(default_factory=list)
    inner: Inner | None = None
    scale: int | float = 1


@dataclass
class Required:
    n: int
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.5))


@dataclass
class Checked:
    n: int = 1

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be >= 1")


def full_config() -> StageConfig:
    return StageConfig(
        model=ModelConfig(channels=(16, 32, 64), kind="flow", periodic=True, name="1e-4"),
        optim=OptimConfig(lr=2.5e-4, betas=(0.9, 0.99), warmup=10),
        seed=7,
        out=Path("/tmp/run"),
        init=Path("ckpt/base"),
        tags=["a", "yes", "null"],
        pair=(3, "b"),
        extra={"nested": {"k": [1, 2]}, "s": "x"},
        sections=[Inner(3, {"a": 1}), Inner()],
        inner=Inner(depth=5),
        scale=0.5,
    )


def message(err: pytest.ExceptionInfo) -> str:
    return str(err.value)


# --- round trips ---------------------------------------------------------------------------------


def test_round_trip_dict_and_yaml():
    cfg = full_config()
    d = to_dict(cfg)
    assert d["model"]["channels"] == [16, 32, 64] and d["out"] == "/tmp/run"
    assert from_dict(StageConfig, d) == cfg
    assert from_dict(StageConfig, yaml.safe_load(yaml.safe_dump(d))) == cfg
    assert load_config(StageConfig, overrides=[], base=yaml.safe_load(dump_yaml(cfg))) == cfg


def test_round_trip_defaults_and_types():
    cfg = from_dict(StageConfig, {})
    assert cfg == StageConfig()
    back = from_dict(StageConfig, to_dict(full_config()))
    assert isinstance(back.model.channels, tuple) and isinstance(back.out, Path)
    assert isinstance(back.sections[0], Inner) and isinstance(back.inner, Inner)


def test_save_config_is_atomic_and_reloads(tmp_path):
    cfg = full_config()
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]
    assert load_config(StageConfig, path) == cfg
    save_config(StageConfig(), path)  # overwrite
    assert load_config(StageConfig, path) == StageConfig()
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]


def test_save_config_failure_leaves_no_temp_file(tmp_path):
    with pytest.raises(TypeError):
        save_config(StageConfig(extra={"bad": object()}), tmp_path / "config.yaml")
    assert list(tmp_path.iterdir()) == []


def test_strings_that_look_like_numbers_stay_strings():
    cfg = StageConfig(model=ModelConfig(name="1e-4"), tags=["1e5", "true", "0.5"])
    assert load_config(StageConfig, base=yaml.load(dump_yaml(cfg), Loader=yaml.SafeLoader)) == cfg
    text = dump_yaml(cfg)
    assert "'1e-4'" in text


# --- overrides -----------------------------------------------------------------------------------


def test_overrides_at_several_depths():
    cfg = load_config(
        StageConfig,
        overrides=[
            "seed=3",
            "optim.lr=1e-4",
            "optim.betas=[0.9,0.99]",
            "model.kind=flow",
            "model.periodic=true",
            "init=null",
            "extra.a.b.c=1",
            "inner.depth=4",
            "tags=[x, y]",
        ],
    )
    assert cfg.seed == 3 and cfg.optim.lr == 1e-4 and cfg.optim.betas == (0.9, 0.99)
    assert cfg.model == ModelConfig(kind="flow", periodic=True)
    assert cfg.init is None and cfg.extra == {"a": {"b": {"c": 1}}}
    assert cfg.inner == Inner(depth=4) and cfg.tags == ["x", "y"]


def test_parse_value_uses_yaml_1_2_numbers_and_booleans():
    assert parse_value("1e-4") == 1e-4 and parse_value("-2E3") == -2000.0 and parse_value(".5") == 0.5
    assert parse_value("1.0e5") == 1e5 and math.isinf(parse_value(".inf"))
    assert parse_value("3") == 3 and parse_value("true") is True and parse_value("yes") == "yes"
    assert parse_value("foo") == "foo" and parse_value("null") is None


def test_apply_overrides_does_not_mutate_and_creates_sections():
    data = {"optim": {"lr": 1.0}}
    out = apply_overrides(data, ["optim.betas=[1, 2]", "new.section.key=x"])
    assert data == {"optim": {"lr": 1.0}}
    assert out == {"optim": {"lr": 1.0, "betas": [1, 2]}, "new": {"section": {"key": "x"}}}


@pytest.mark.parametrize("bad", ["optim.lr", "=3", "optim..lr=1", ".lr=1", "lr"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match=r"key.sub=value") as err:
        apply_overrides({}, [bad])
    assert "-p optim.lr=1e-4" in message(err)


def test_override_into_a_value_is_an_error():
    with pytest.raises(ConfigError, match=r"'optim.lr' is a value"):
        load_config(StageConfig, overrides=["optim.lr.x=1"])


def test_override_value_that_is_not_yaml():
    with pytest.raises(ConfigError, match=r"cannot read"):
        apply_overrides({}, ["tags=[a, b"])
    with pytest.raises(ConfigError, match=r"cannot read"):
        apply_overrides({}, ["x=2024-13-45"])  # PyYAML raises ValueError on bad dates


# --- unknown keys and wrong types ----------------------------------------------------------------


def test_unknown_key_names_dotted_key_valid_keys_and_suggestion():
    with pytest.raises(ConfigError) as err:
        load_config(StageConfig, overrides=["optim.lrr=1e-4"])
    text = message(err)
    assert "'optim.lrr'" in text and "did you mean 'lr'?" in text
    assert "valid keys under 'optim': lr, betas, weight_decay, warmup" in text


def test_unknown_top_level_and_nested_in_list():
    with pytest.raises(ConfigError, match=r"'optimm'.*\n.*did you mean 'optim'"):
        from_dict(StageConfig, {"optimm": {}})
    with pytest.raises(ConfigError, match=r"unknown key 'sections\[1\].deph'.*\n.*did you mean 'depth'"):
        from_dict(StageConfig, {"sections": [{}, {"deph": 1}]})


def test_unknown_key_without_close_match_still_lists_keys():
    with pytest.raises(ConfigError) as err:
        from_dict(OptimConfig, {"zzz": 1}, where="my.yaml")
    assert "did you mean" not in message(err) and "valid keys: lr, betas" in message(err)
    assert "in my.yaml" in message(err)


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("optim.lr=fast", "optim.lr", "float"),
        ("optim.lr='1e-4'", "optim.lr", "float"),
        ("steps=1.5", "steps", "int"),
        ("steps=2.0", "steps", "int"),
        ("model.kind=edn", "model.kind", "one of 'edm', 'flow'"),
        ("model.channels=[1, x]", r"model.channels\[1\]", "int"),
        ("optim.betas=0.9", "optim.betas", r"tuple\[float, ...\]"),
        ("pair=[1, 2]", r"pair\[1\]", "str"),
        ("pair=[1]", "pair", r"tuple\[int, str\]"),
        ("model.name=3", "model.name", "str"),
        ("model.name=null", "model.name", "str"),
        ("out=3", "out", "Path"),
        ("model=3", "model", "mapping of ModelConfig"),
        ("optim.warmup=x", "optim.warmup", "int"),
        ("scale=x", "scale", "int | float"),
        ("extra=[1]", "extra", r"dict\[str, Any\]"),
    ],
)
def test_wrong_types_name_the_key(override, key, expected):
    with pytest.raises(ConfigError, match=f"^{key}: expected {expected}"):
        load_config(StageConfig, overrides=[override])


def test_literal_error_suggests_close_match():
    with pytest.raises(ConfigError, match=r"did you mean 'edm'"):
        load_config(StageConfig, overrides=["model.kind=edn"])


def test_bool_is_not_a_number_and_strings_are_not_bools():
    for override in ["steps=true", "optim.lr=false", "scale=true"]:
        with pytest.raises(ConfigError, match=r"got (True|False) \(bool\)"):
            load_config(StageConfig, overrides=[override])
    for value in ["'true'", "yes", "1", "on"]:
        with pytest.raises(ConfigError, match=r"model.periodic: expected bool"):
            load_config(StageConfig, overrides=[f"model.periodic={value}"])


def test_int_accepted_for_float_and_union_prefers_exact_type():
    cfg = load_config(StageConfig, overrides=["optim.lr=1", "scale=2", "optim.warmup=5"])
    assert cfg.optim.lr == 1.0 and type(cfg.optim.lr) is float
    assert cfg.scale == 2 and type(cfg.scale) is int
    assert type(load_config(StageConfig, overrides=["scale=2.5"]).scale) is float


def test_missing_required_key_and_post_init_check():
    with pytest.raises(ConfigError, match=r"missing key 'n'"):
        load_config(Required)
    assert load_config(Required, overrides=["n=2"]).optim.lr == 0.5
    with pytest.raises(ConfigError, match=r"n must be >= 1"):
        from_dict(Checked, {"n": 0})


def test_from_dict_needs_a_mapping_and_a_dataclass():
    with pytest.raises(ConfigError, match=r"mapping"):
        from_dict(StageConfig, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        from_dict(dict, {})


# --- merging and files ---------------------------------------------------------------------------


def test_deep_merge():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    out = deep_merge(base, {"a": {"c": [3]}, "d": {"e": 2}})
    assert out == {"a": {"b": 1, "c": [3]}, "d": {"e": 2}}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_merge_order_defaults_base_file_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-2\n  weight_decay: 0.1\nseed: 5\n")
    base = {"optim": {"lr": 0.5, "warmup": 3}, "seed": 1, "steps": 7}
    cfg = load_config(StageConfig, path, ["optim.weight_decay=0.2"], base=base)
    assert cfg.optim == OptimConfig(lr=1e-2, betas=(0.9, 0.999), weight_decay=0.2, warmup=3)
    assert (cfg.seed, cfg.steps, cfg.model) == (5, 7, ModelConfig())


def test_base_may_be_a_preset_instance_and_defaults_of_parent_survive():
    preset = StageConfig(optim=OptimConfig(lr=0.25))
    assert load_config(StageConfig, base=preset, overrides=["seed=2"]) == dataclasses.replace(preset, seed=2)
    # a partial section merges over the parent's default, not over the section class defaults
    assert load_config(Required, base={"n": 1, "optim": {"warmup": 2}}).optim.lr == 0.5


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 1\noptim:\n  lr: [1, 2\nsteps: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line \d+"):
        load_config(StageConfig, path)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "3\n", "just text\n"])
def test_file_must_be_a_mapping(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"must be a mapping"):
        load_config(StageConfig, path)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml' does not exist"):
        load_config(StageConfig, tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml") == {}
    assert load_config(StageConfig, tmp_path / "empty.yaml") == StageConfig()


def test_unknown_key_in_file_is_reported(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  chanels: [8]\n")
    with pytest.raises(ConfigError, match=r"unknown key 'model.chanels'.*\n.*did you mean 'channels'"):
        load_config(StageConfig, path)


# --- property: any override either loads or is a ConfigError -------------------------------------

_KEYS = [
    "seed",
    "steps",
    "optim",
    "optim.lr",
    "optim.betas",
    "optim.warmup",
    "optim.lr.x",
    "model.kind",
    "model.periodic",
    "model.channels",
    "model.name",
    "out",
    "init",
    "tags",
    "pair",
    "extra",
    "extra.k",
    "sections",
    "inner",
    "inner.depth",
    "inner.opts.a",
    "scale",
    "nope",
    "",
    "a..b",
]
_VALUES = [
    "1",
    "-3",
    "1.5",
    "1e-4",
    "true",
    "null",
    "",
    "edm",
    "flow",
    "[1, 2]",
    "[0.9, 0.99]",
    "[1, 'a']",
    "{depth: 3}",
    "{a: 1}",
    "[{depth: 1}]",
    "[{deph: 1}]",
    "'x'",
    "[1,",
    "2024-13-45",
    "!!python/name:os.system",
    "9" * 400,
    ".nan",
    ":",
    "- a",
]
_override = st.one_of(
    st.builds(
        lambda k, v: f"{k}={v}",
        st.one_of(st.sampled_from(_KEYS), st.text(max_size=8)),
        st.one_of(st.sampled_from(_VALUES), st.text(max_size=12)),
    ),
    st.text(max_size=16),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_override, max_size=4))
def test_random_overrides_load_or_raise_config_error(overrides):
    try:
        cfg = load_config(StageConfig, overrides=overrides)
    except ConfigError:
        return
    assert isinstance(cfg, StageConfig)
    again = load_config(StageConfig, base=yaml.load(dump_yaml(cfg), Loader=yaml.SafeLoader))
    assert dump_yaml(again) == dump_yaml(cfg)


@pytest.mark.parametrize("override", ["model.name=[1, 2]", "model.name={a: 1}", "tags=[[1]]", "seed={}"])
def test_every_wrong_type_says_what_to_give(override):
    with pytest.raises(ConfigError) as err:
        load_config(StageConfig, overrides=[override])
    assert err.value.fix


def test_an_alias_bomb_is_refused_before_anything_walks_it(tmp_path):
    """Nine lines of nested aliases stand for 9^9 values: refused while composing, before any walk."""
    from pirf.config.yaml_io import MAX_YAML_ALIASES, read_yaml

    lines = ['a: &a ["lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="aliases"):
        read_yaml(bomb)
    few = tmp_path / "few.yaml"
    few.write_text(
        "base: &lr 1.0e-4\nlr: *lr\n" + "".join(f"x{i}: *lr\n" for i in range(MAX_YAML_ALIASES - 1))
    )
    assert read_yaml(few)["lr"] == 1e-4


# -- every setting in its range (pirf.config.limits) -------------------------------------------------
@pytest.mark.parametrize(
    ("verb", "override", "expected"),
    [
        ("pretrain", "lr=-1e-3", "lr = -0.001 is out of range.*positive finite"),
        ("pretrain", "lr=.nan", "lr = nan is out of range"),
        ("pretrain", "model.base_channels=200000", r"model.base_channels = 200000 .*\[4, 1024\]"),
        ("pretrain", "betas=[0.9,1.5]", r"betas = \(0.9, 1.5\) .*\[0, 1\)"),
        ("finetune", "eval.n=0", "eval.n = 0 is out of range.*>= 2"),
        ("finetune", "iterations=0", "iterations = 0 .*positive integer"),
        ("bench", "n=1", "n = 1 is out of range"),
    ],
)
def test_settings_out_of_range_are_refused_when_the_config_loads(verb, override, expected, tmp_path, capsys):
    from pirf import cli

    out = tmp_path / "never-made"
    with pytest.raises(SystemExit) as exc:
        cli.main([verb, override, f"out={out}", "--show"])
    err = " ".join(capsys.readouterr().err.split())
    assert exc.value.code == 2 and re.search(expected, err), err
    assert "Traceback" not in err and not out.exists()


def test_limits_admit_their_range_only():
    from pirf.config.limits import COUNT, OPEN_FRACTION, POSITIVE, Limit

    assert POSITIVE.admits(1e-12) and not POSITIVE.admits(0.0) and not POSITIVE.admits(float("inf"))
    assert COUNT.admits(3) and not COUNT.admits(0) and not COUNT.admits(2.5) and not COUNT.admits(True)
    assert OPEN_FRACTION.admits(0.0) and not OPEN_FRACTION.admits(1.0)
    assert Limit(low=-1, high=1).describe() == "a finite number in [-1, 1]"


def test_a_model_record_asking_for_a_giant_network_is_refused_before_allocating():
    from pirf.errors import ConfigError
    from pirf.models.factory import from_description

    record = {
        "kind": "edm",
        "sigma_data": 1.0,
        "unet": {"channels": 2, "resolution": 16, "base_channels": 200000, "channel_mult": [1, 2]},
    }
    with pytest.raises(ConfigError, match="channels at the widest level"):
        from_description(record)


def test_a_run_into_its_own_data_file_is_refused(tmp_path):
    from pirf import data, pdes
    from pirf.errors import ConfigError
    from pirf.training import DataConfig, PretrainConfig, pretrain

    path = tmp_path / "d.h5"
    data.generate_dataset(pdes.get("poisson"), 4, path, resolution=16, progress=False)
    with pytest.raises(ConfigError, match="is the training data file"):
        pretrain(PretrainConfig(data=DataConfig(path=str(path)), out=str(path), steps=1), progress=False)
    assert data.read_info(path).n == 4  # untouched


def test_the_config_reference_page_is_the_generated_one():
    """docs/config.md lists every key of every verb's config; regenerate it with
    `python -m pirf.config.reference > docs/config.md` when a config changes."""
    from pathlib import Path

    from pirf.config.reference import reference

    page = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    text = reference()
    assert page.read_text() == text
    for key in (
        "`sigma_log_uniform`",
        "`sampler.steps_choices`",
        "`truncation.sigma`",
        "`regularization.alphas`",
    ):
        assert key in text
