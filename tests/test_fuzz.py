"""Bad input, fuzzed: garbled overrides and command lines, damaged data files and checkpoints.

The property of every case: pirf refuses it with a `PirfError` whose message names the problem
and whose ``fix`` says what to do; through the `pirf` command (`pirf.cli.main`) that is exit code
2 with ``error: ... fix: ...`` on stderr (or click's usage message) and no traceback; and the
working folder, ``--out`` included, holds afterwards exactly what it held before.

The bad inputs are made from one small valid data file (4 Poisson samples at 16x16) and the
rough 16x16 Poisson model of ``conftest.py``. Hypothesis profiles: ``pirf-fuzz`` (CI, the module
runs in well under a minute on 2 cores) and ``pirf-fuzz-long`` (15x the examples), picked by
``PIRF_FUZZ_LONG=1``. ``PIRF_FUZZ_REPORT=path.json`` writes how many examples each test ran.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
import typing
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pirf
from fuzzing import (
    CHECKPOINT_DAMAGE,
    DATA_DAMAGE,
    TEXT,
    Damage,
    assert_refused,
    copy_checkpoint,
    listing,
    pirf_cli,
    refused,
    workspace,
)
from pirf import data, pdes
from pirf.bench.config import BenchConfig
from pirf.errors import NonFiniteError
from pirf.finetune.config import FinetuneConfig
from pirf.models.checkpoint import load_checkpoint
from pirf.models.loading import load_model
from pirf.training import PretrainConfig

# -- profiles and the example count ------------------------------------------------------------------

LONG = os.environ.get("PIRF_FUZZ_LONG") == "1"
settings.register_profile(
    "pirf-fuzz",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("pirf-fuzz-long", settings.get_profile("pirf-fuzz"), max_examples=450)
PROFILE = "pirf-fuzz-long" if LONG else "pirf-fuzz"

EXAMPLES: Counter[str] = Counter()
SECONDS: Counter[str] = Counter()


def fuzz(weight: float) -> settings:
    """The profile's settings with ``weight`` x its example count (cheap tests run more)."""
    profile = settings.get_profile(PROFILE)
    return settings(profile, max_examples=max(1, round(profile.max_examples * weight)))


def counted(test: Callable[..., None]) -> Callable[..., None]:
    """Count the examples a test runs and the time they take (for ``PIRF_FUZZ_REPORT``)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        try:
            test(*args, **kwargs)
        finally:
            EXAMPLES[test.__name__] += 1
            SECONDS[test.__name__] += time.perf_counter() - t0

    return run


@pytest.fixture(scope="module", autouse=True)
def _fuzz_report() -> Iterator[None]:
    yield
    target = os.environ.get("PIRF_FUZZ_REPORT")
    if target:
        report = {
            "profile": PROFILE,
            "pirf_version": pirf.__version__,
            "tests": {
                name: {"examples": EXAMPLES[name], "seconds": round(SECONDS[name], 2)} for name in EXAMPLES
            },
            "examples": sum(EXAMPLES.values()),
        }
        Path(target).write_text(json.dumps(report, indent=1) + "\n")


# -- shared valid inputs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def good_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz-data") / "poisson.h5"
    data.generate_dataset(pdes.get("poisson"), 4, path, resolution=16, seed=1, progress=False)
    return path


@pytest.fixture(scope="module")
def good_model(rough_poisson_model: Path) -> Path:
    return rough_poisson_model


# -- config overrides and command lines --------------------------------------------------------------


def _dotted_keys(cls: type, prefix: str = "") -> list[str]:
    hints, keys = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _dotted_keys(hints[f.name], f"{prefix}{f.name}.")
    return keys


KEYS = sorted(set(_dotted_keys(PretrainConfig) + _dotted_keys(FinetuneConfig) + _dotted_keys(BenchConfig)))
VALUES = [
    *("0", "-1", "1", "3", "1.5", "1e-4", "-1e400", "nan", ".inf", "true", "yes", "null", "~", ""),
    *("[1, 2]", "[]", "{a: 1}", "{}", "'quoted'", "edm", "flow", "heun", "[", "{", ": :", "- x"),
    *("!!python/object/apply:os.system ['true']", "&a [*a]", "2020-01-01", "0x10", "1_000", "'"),
    *("1e300", "3e38", "-1e308", "1e9", "2147483648", "99999999999999999999", "[1e300, 1e300]"),
    "{" + ", ".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else 'x'}]" for i in range(10)) + "}",
]
"""Override values: YAML of every kind, huge finite numbers, and a one-line alias bomb (9^9)."""


@st.composite
def typos(draw: st.DrawFn) -> str:
    """A config key with one character dropped, replaced or added."""
    key = draw(st.sampled_from(KEYS))
    i = draw(st.integers(0, len(key)))
    return key[:i] + draw(st.sampled_from(["", "x", "_", "."])) + key[i + 1 :]


@st.composite
def overrides(draw: st.DrawFn) -> str:
    """``key=value`` with real, misspelt or random keys and values, or no ``=`` at all."""
    key = draw(st.one_of(st.sampled_from(KEYS), typos(), TEXT))
    value = draw(st.one_of(st.sampled_from(VALUES), TEXT))
    return draw(st.sampled_from([f"{key}={value}", key, f"={value}", f"{key}.={value}", f"{key} = {value}"]))


@fuzz(3)
@given(stage=st.sampled_from(["pretrain", "finetune", "bench"]), items=st.lists(overrides(), max_size=4))
@counted
def test_garbled_overrides_exit_2_with_a_fix(space: Path, stage: str, items: list[str]) -> None:
    with workspace(space) as ws:
        if stage == "pretrain":
            run = pirf_cli(["pretrain", "poisson", "--show", *[a for o in items for a in ("-p", o)]])
        else:
            run = pirf_cli([stage, "--show", *(["poisson"] if stage == "finetune" else []), *items])
        assert listing(ws) == {}
    if run.code == 0:
        assert run.out.strip()
    else:  # a positional override that starts with '-' is an unknown option to click
        assert_refused(run, usage=stage != "pretrain")


def _count_text(limit: int) -> st.SearchStrategy[str]:
    """Option values: small counts, numbers that are not counts, and any text that is not a
    large count (a valid huge --n would only make the example slow)."""

    def small_or_not_a_count(text: str) -> bool:
        try:
            return abs(int(text)) <= limit
        except ValueError:
            return True

    special = st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "1.5", "0x1", "two", "-1", "0"])
    return st.one_of(st.integers(-2, limit).map(str), special, TEXT.filter(small_or_not_a_count))


COUNT = _count_text(3)
SMALL_EVAL = ["--n", "2", "--steps", "2", "--n-reference", "4"]
REAL = st.one_of(st.sampled_from(["0", "1e-3", "-1", "nan", "inf", "1e400", "x", ""]), TEXT)


def _options(*pairs: tuple[str, st.SearchStrategy[str]]) -> st.SearchStrategy[list[str]]:
    """Some of the options ``pairs``, each with a drawn value, in a drawn order."""
    option = st.sampled_from(pairs).flatmap(lambda p: p[1].map(lambda v, name=p[0]: [name, v]))
    return st.lists(option, max_size=4).map(lambda items: [a for item in items for a in item])


def _spec(model: str, data_file: str) -> st.SearchStrategy[str]:
    return st.sampled_from([model, "poisson", "wave", "missing.safetensors", data_file, "."]) | TEXT


def command_lines(model: str, data_file: str) -> st.SearchStrategy[list[str]]:
    """Command lines of every command, with options of wrong type or range mixed into right ones;
    the commands that would train (pretrain, finetune, bench) get ``--show`` first."""
    spec, file = _spec(model, data_file), st.sampled_from([data_file, "missing.h5", model, "."]) | TEXT
    pde = st.sampled_from(["poisson", "helmholtz", "wave", ""]) | TEXT
    sampler = st.sampled_from(["heun", "euler", "ddim", "flow_sde", "dps"]) | TEXT
    override = overrides()
    commands = [
        st.tuples(
            st.just(["data", "generate"]),
            pde.map(lambda v: [v, "--n", "2"]),
            _options(
                ("--n", COUNT),
                ("--resolution", st.sampled_from(["16", "8", "7", "0", "-16", "x"])),
                ("--seed", COUNT),
                ("-p", override),
                ("--chunk", COUNT),
                ("--out", st.sampled_from(["o.h5", ""])),
            ),
        ),
        st.tuples(st.just(["data", "info"]), file.map(lambda v: [v]), st.sampled_from([[], ["--json"]])),
        st.tuples(
            st.just(["data", "check"]),
            file.map(lambda v: [v]),
            _options(("--n", COUNT), ("--tolerance", REAL)),
        ),
        st.tuples(st.just(["pretrain", "--show"]), pde.map(lambda v: [v]), _options(("-p", override))),
        st.tuples(
            st.just(["finetune", "--show"]),
            spec.map(lambda v: [v]),
            _options(
                ("--method", st.sampled_from(["pirf", "draft", "ddpo", "x"]) | TEXT),
                ("--config", st.sampled_from(["poisson", "darcy", "missing.yaml"]) | TEXT),
            ),
        ),
        st.tuples(
            st.just(["bench", "--show"]),
            st.lists(override, max_size=2),
            _options(
                ("--benchmarks", pde),
                ("--methods", st.sampled_from(["base,pirf", "x"]) | TEXT),
                ("--scale", st.sampled_from(["cpu", "gpu", "tpu"])),
                ("--family", st.sampled_from(["rsm", "x"])),
            ),
        ),
        st.tuples(
            st.just(["sample"]),
            spec.map(lambda v: [v, "--out", "out", "--n", "2", "--steps", "2"]),
            _options(
                ("--out", st.sampled_from(["out", ""])),
                ("--n", COUNT),
                ("--steps", COUNT),
                ("--sampler", sampler),
                ("--seed", COUNT),
                ("--batch-size", COUNT),
                ("--device", st.sampled_from(["cpu", "cuda", "tpu:3", ""]) | TEXT),
                ("--guidance", st.sampled_from(["none", "dps", "value"]) | TEXT),
                ("--zeta", REAL),
                ("--alpha", REAL),
                ("--candidates", COUNT),
                ("--eta", REAL),
                ("--guidance-mode", st.sampled_from(["gradient", "best-of"]) | TEXT),
            ),
        ),
        st.tuples(
            st.just(["evaluate"]),
            spec.map(lambda v: [v, "--out", "out", *SMALL_EVAL]),
            _options(
                ("--out", st.sampled_from(["out", ""])),
                ("--n", COUNT),
                ("--steps", COUNT),
                ("--n-reference", COUNT),
                ("--reference", file),
                ("--train", file),
                ("--sampler", sampler),
            ),
        ),
        st.tuples(
            st.just([]),
            (TEXT.filter(lambda t: t not in ("demo", "bench", "pretrain"))).map(lambda v: [v]),
            st.just([]),
        ),
        st.tuples(st.just(["data"]), TEXT.map(lambda v: [v]), st.just([])),
    ]
    plugin = st.sampled_from([[], ["--plugin", "no_such_module_xyz"], ["--plugin", "broken_plugin.py"]])
    return st.tuples(plugin, st.one_of(commands)).map(lambda t: t[0] + t[1][0] + t[1][1] + t[1][2])


@fuzz(3)
@given(draw=st.data())
@counted
def test_garbled_command_lines_exit_2_with_a_fix(
    space: Path, good_data: Path, good_model: Path, draw: st.DataObject
) -> None:
    argv = draw.draw(command_lines(str(good_model), str(good_data)), label="argv")
    with workspace(space) as ws:
        (ws / "broken_plugin.py").write_text("raise RuntimeError('a broken plugin')\n")
        before = listing(ws)
        run = pirf_cli(argv)
        after = listing(ws)
    assert run.code in (0, 1, 2), (run.code, run.err[-2000:])
    assert "Traceback" not in run.err + run.out
    if run.code == 1:  # only `pirf data check` may fail a check that ran
        assert argv[argv.index("data") : argv.index("data") + 2] == ["data", "check"], run.err
        assert "check failed" in run.err
    if run.code == 2:
        assert_refused(run, usage=True)
    if run.code != 0:
        assert after == before


def _load_all(path: Path) -> np.ndarray:
    ds = data.FieldDataset(path, normalized=False)
    return torch.stack([ds[i] for i in range(len(ds))]).numpy()


@fuzz(4)
@given(damage=DATA_DAMAGE)
@counted
def test_damaged_data_files_are_refused_by_the_loaders(space: Path, good_data: Path, damage: Damage) -> None:
    with workspace(space) as ws:
        path = ws / "bad.h5"
        shutil.copy(good_data, path)
        damage.apply(path)
        refused(lambda: data.read_info(path))
        loaded: list[np.ndarray] = []
        err = refused(lambda: loaded.append(_load_all(path)))
        if damage.must_fail or damage.nonfinite or damage.outlier:
            assert err is not None, f"{damage.name} was loaded"
            assert isinstance(err, NonFiniteError) or not damage.nonfinite
            assert "the median range" in str(err) or not damage.outlier
        elif err is None:  # a harmless change: the same fields come back
            np.testing.assert_array_equal(loaded[0], data.read_fields(good_data))
        reports: list[data.CheckReport] = []
        err = refused(lambda: reports.append(data.check_dataset(path, max_samples=4)))
        if damage.nonfinite:
            assert err is None and reports[0].nonfinite and not reports[0].ok
        elif damage.outlier:
            assert err is None and reports[0].outliers and not reports[0].ok
        elif damage.must_fail:
            assert err is not None, f"{damage.name} was checked"


def _data_command(name: str, file: str, model: Path) -> list[str]:
    tiny = ["steps=1", "batch_size=2", "model.base_channels=8", "model.channel_mult=[1,2]", "log_every=1"]
    return {
        "info": ["data", "info", file],
        "check": ["data", "check", file, "--n", "4"],
        "pretrain": ["pretrain", "poisson", "-p", f"data.path={file}", "-p", "out=out"]
        + [a for o in tiny for a in ("-p", o)],
        "reference": ["evaluate", str(model), "--reference", file, "--out", "out", *SMALL_EVAL],
        "train": ["evaluate", str(model), "--train", file, "--out", "out", *SMALL_EVAL],
    }[name]


@fuzz(2)
@given(damage=DATA_DAMAGE, command=st.sampled_from(["info", "check", "pretrain", "reference", "train"]))
@counted
def test_damaged_data_files_exit_2_from_every_command(
    space: Path, good_data: Path, good_model: Path, damage: Damage, command: str
) -> None:
    with workspace(space) as ws:
        path = ws / "bad.h5"
        shutil.copy(good_data, path)
        damage.apply(path)
        harmless = (
            not (damage.must_fail or damage.nonfinite or damage.outlier)
            and refused(lambda: data.read_fields(path)) is None
        )
        if harmless and command in ("pretrain", "reference", "train"):
            command = "check"  # still a valid data set: a whole training or evaluation run would only be slow
        before = listing(ws)
        run = pirf_cli(_data_command(command, str(path), good_model))
        after = listing(ws)
    assert "Traceback" not in run.err + run.out
    if (damage.nonfinite or damage.outlier) and command == "info":  # info reads the description only
        assert run.code == 0
    elif command == "check" and (damage.nonfinite or damage.outlier or (harmless and run.code == 1)):
        assert run.code == 1 and "check failed" in run.err and ("NaN" in run.err or not damage.nonfinite)
    elif not harmless or run.code != 0:
        assert_refused(run)
    if run.code != 0:
        assert after == before


@fuzz(4)
@given(damage=CHECKPOINT_DAMAGE)
@counted
def test_damaged_checkpoints_are_refused_by_the_loaders(
    space: Path, good_model: Path, damage: Damage
) -> None:
    with workspace(space) as ws:
        weights = copy_checkpoint(good_model, ws)
        damage.apply(weights)
        refused(lambda: load_checkpoint(weights))
        err = refused(lambda: load_model(weights))
        assert err is not None or not damage.must_fail, f"{damage.name} was loaded"


def _model_command(name: str, weights: str, model: Path) -> list[str]:
    tiny = [
        "steps=1",
        "batch_size=2",
        "log_every=1",
        f"init={weights}",
        f"data.path={model.parent.parent}/poisson.h5",
    ]
    fast = ["iterations=1", "batch_size=2", "eval.n=2", "eval.n_reference=4", "eval.every=1"]
    return {
        "sample": ["sample", weights, "--out", "out", "--n", "2", "--steps", "2"],
        "evaluate": ["evaluate", weights, "--out", "out", *SMALL_EVAL],
        "finetune": ["finetune", weights, "out=out", *fast],
        "pretrain": ["pretrain", "poisson", "-p", "out=out", *[a for o in tiny for a in ("-p", o)]],
    }[name]


@fuzz(2)
@given(
    damage=CHECKPOINT_DAMAGE.filter(lambda d: d.must_fail),
    command=st.sampled_from(["sample", "evaluate", "finetune", "pretrain"]),
)
@counted
def test_damaged_checkpoints_exit_2_from_every_command(
    space: Path, good_model: Path, damage: Damage, command: str
) -> None:
    with workspace(space) as ws:
        weights = copy_checkpoint(good_model, ws)
        damage.apply(weights)
        before = listing(ws)
        run = pirf_cli(_model_command(command, str(weights), good_model))
        after = listing(ws)
    assert_refused(run)
    assert after == before
