"""Bad inputs for `test_fuzz.py`, and how to judge what pirf does with them.

- `pirf_cli` runs ``pirf ARGV`` through `pirf.cli.main`; `refused` and `assert_refused` check
  that a refusal is a `PirfError` with a fix (library) or exit code 2 with ``error: ... fix: ...``
  and no traceback (command); `listing` and `workspace` check that nothing is left behind.
- `DATA_DAMAGE` and `CHECKPOINT_DAMAGE` draw a `Damage`: a named change to a copy of a valid data
  file or checkpoint (truncation, wrong dtype or shape, NaN/inf, missing or garbled attributes
  and record entries, renamed, missing, mis-shaped or mis-typed tensors, swapped files, foreign
  content). ``must_fail`` damages leave nothing a loader may accept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from hypothesis import strategies as st
from safetensors.torch import load_file

import pirf
from pirf import cli, data
from pirf.errors import PirfError
from pirf.models.checkpoint import checkpoint_paths, save_checkpoint

# -- running pirf and judging what it did ------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str


def pirf_cli(argv: list[str]) -> Run:
    """``pirf ARGV`` through the console script's entry point; raw exceptions propagate."""
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main(argv)
        except SystemExit as exc:
            code = exc.code
    code = code if isinstance(code, int) else (0 if code is None else 1)
    return Run(code, out.getvalue(), err.getvalue())


def refused(call: Callable[[], object]) -> PirfError | None:
    """The `PirfError` ``call`` raised, checked to name a problem and a fix; None if it returned.
    Any other exception propagates: that is what the fuzzers look for."""
    try:
        call()
    except PirfError as err:
        assert err.problem.strip(), repr(err)
        assert err.fix and err.fix.strip(), f"{type(err).__name__} without a fix: {err}"
        return err
    return None


def assert_refused(run: Run, *, usage: bool = False) -> None:
    """Exit code 2, no traceback, and ``error: ... fix: ...`` (or, with ``usage``, click's message)."""
    assert run.code == 2, (run.code, run.err[-2000:], run.out[-2000:])
    assert "Traceback" not in run.err + run.out
    if usage and "Usage:" in run.err:
        return
    text = " ".join(run.err.split())
    assert text.startswith("error:") and re.search(r"\bfix: \S", text), run.err


def listing(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (hidden temporaries too) with its size."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def workspace(root: Path) -> Iterator[Path]:
    """A fresh empty folder, the working directory while the example runs."""
    with tempfile.TemporaryDirectory(dir=root) as folder, contextlib.chdir(folder):
        yield Path(folder)


@dataclass(frozen=True)
class Damage:
    """A named change to a file; ``must_fail``: every loader must refuse the result."""

    name: str
    apply: Callable[[Path], None] = dataclasses.field(repr=False, compare=False)
    must_fail: bool = True
    nonfinite: bool = False
    outlier: bool = False  # huge finite values in one sample: loaders refuse, a check fails


TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
"""Any text a shell can pass (argv holds no NUL)."""


# -- damaged data files ------------------------------------------------------------------------------

DATA_SHAPE = (4, 2, 16, 16)
ATTRS = (
    *("format", "format_version", "pirf_version", "pde", "params", "fields", "resolution", "axes"),
    *("spacing", "boundary", "n", "seed", "solver", "normalization", "floor", "created", "complete"),
)
JSON_SNIPPETS = (
    *("{}", "[]", "null", "3", '"f"', "{", "1e999", "NaN", '["f", "u"]', '["u", "f"]', '["f", "u", "w"]'),
    *(
        '{"shift": [0, 0], "scale": [1, 1]}',
        '{"shift": [0], "scale": [1]}',
        '{"shift": [0, 0], "scale": [0, 1]}',
    ),
    *('{"shift": [0, "x"], "scale": [1, 1]}', '{"alpha": "x"}', '{"nu": 1}', '{"alpha": -1}', '{"all": 3}'),
    *('{"all": {"median_mse": "x"}}', '{"all": {"median_mse": 1.0}}', "pirf-dataset", "poisson", "wave"),
)
ATTR_VALUES = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.booleans(),
    st.sampled_from(JSON_SNIPPETS),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=16),
    st.lists(st.integers(-5, 5), min_size=1, max_size=3).map(np.array),
    st.just(np.bytes_(b"pirf-dataset")),
)


def _h5_edit(edit: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        with h5py.File(path, "a") as f:
            edit(f)

    return apply


def _truncate(fraction: float) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        raw = path.read_bytes()
        path.write_bytes(raw[: int(fraction * len(raw))])

    return apply


def _replace_fields(values: np.ndarray) -> Callable[[Path], None]:
    def edit(f: h5py.File) -> None:
        del f["fields"]
        f["fields"] = values

    return _h5_edit(edit)


def _wrong_dtype(dtype: str) -> Damage:
    base = np.ones(DATA_SHAPE)
    values = np.full(DATA_SHAPE, "1.0", dtype=object) if dtype == "vlen-str" else base.astype(dtype)
    if dtype == "vlen-str":
        return Damage(f"fields of dtype {dtype}", _h5_edit(lambda f: _vlen_fields(f, values)))
    return Damage(f"fields of dtype {dtype}", _replace_fields(values))


def _vlen_fields(f: h5py.File, values: np.ndarray) -> None:
    del f["fields"]
    f.create_dataset("fields", data=values, dtype=h5py.string_dtype())


def _nonfinite(spots: list[tuple[int, int, int, int]], value: float) -> Damage:
    def edit(f: h5py.File) -> None:
        x = f["fields"][...]
        for spot in spots:
            x[spot] = value
        f["fields"][...] = x

    return Damage(f"{value} at {spots}", _h5_edit(edit), nonfinite=True)


def _set_attr(name: str, value: Any) -> Damage:
    return Damage(
        f"attribute {name} = {value!r}", _h5_edit(lambda f: f.attrs.__setitem__(name, value)), False
    )


def _rename(name: str) -> Damage:
    return Damage(f"'fields' renamed {name!r}", _h5_edit(lambda f: f.move("fields", name)))


def _extra(name: str, shape: tuple[int, ...]) -> Damage:
    return Damage(
        f"extra data set {name!r} {shape}", _h5_edit(lambda f: f.create_dataset(name, shape, "f4")), False
    )


def _foreign(items: list[tuple[str, tuple[int, ...]]], tagged: bool) -> Damage:
    def apply(path: Path) -> None:
        path.unlink()
        with h5py.File(path, "w") as f:
            for name, shape in items:
                f.require_group("g").create_dataset(name, data=np.random.default_rng(0).normal(size=shape))
            f.attrs["title"] = "someone else's file"
            if tagged:
                f.attrs["format"] = "pirf-dataset"

    return Damage(f"foreign HDF5 file {items}, tagged={tagged}", apply)


def _bytes(content: bytes) -> Damage:
    return Damage(f"not HDF5: {content[:16]!r}", lambda path: path.write_bytes(content))


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _huge(sample: int, spots: list[tuple[int, int, int]], value: float) -> Damage:
    """Huge finite values in one sample (a sample in many would move the median it is judged by)."""

    def edit(f: h5py.File) -> None:
        x = f["fields"][...]
        for c, i, j in spots:
            x[sample, c, i, j] = value
        f["fields"][...] = x

    return Damage(f"{value:g} at sample {sample} {spots}", _h5_edit(edit), must_fail=False, outlier=True)


HUGE = st.one_of(st.sampled_from([3e38, -3e38, 1e30, 1e6]), st.floats(1e5, 3e38), st.floats(-3e38, -1e5))


NAMES = st.text(st.sampled_from("abcxyz_0123456789"), min_size=1, max_size=8).filter(lambda n: n != "fields")
SHAPES = st.lists(st.integers(1, 20), max_size=5).map(tuple)
SPOT = st.tuples(st.integers(0, 3), st.integers(0, 1), st.integers(0, 15), st.integers(0, 15))
DATA_DAMAGE = st.one_of(
    st.floats(0, 1, exclude_max=True).map(lambda q: Damage(f"truncated at {q:.4f}", _truncate(q))),
    st.sampled_from(["int8", "int32", "int64", "uint8", "bool", "complex64", "S4", "vlen-str"]).map(
        _wrong_dtype
    ),
    SHAPES.filter(lambda s: s != DATA_SHAPE).map(
        lambda s: Damage(f"fields of shape {s}", _replace_fields(np.zeros(s, np.float32)))
    ),
    st.builds(_nonfinite, st.lists(SPOT, min_size=1, max_size=4), st.sampled_from([np.nan, np.inf, -np.inf])),
    st.builds(_huge, st.integers(0, 3), st.lists(SPOT.map(lambda s: s[1:]), min_size=1, max_size=4), HUGE),
    st.sampled_from([*data.REQUIRED_ATTRS, "complete"]).map(
        lambda a: Damage(f"attribute {a} removed", _h5_edit(lambda f: f.attrs.__delitem__(a)))
    ),
    st.builds(_set_attr, st.sampled_from(ATTRS), ATTR_VALUES),
    NAMES.map(_rename),
    st.builds(_extra, NAMES, SHAPES),
    st.just(
        Damage("'fields' is a group", _h5_edit(lambda f: (f.__delitem__("fields"), f.create_group("fields"))))
    ),
    st.builds(
        _foreign, st.lists(st.tuples(NAMES, SHAPES), max_size=3, unique_by=lambda t: t[0]), st.booleans()
    ),
    st.binary(max_size=64).map(_bytes),
    st.just(Damage("a folder in its place", _folder)),
)


# -- damaged checkpoints -----------------------------------------------------------------------------

_MAJOR, _MINOR = (int(v) for v in pirf.__version__.split(".")[:2])
RECORD_EDITS: list[tuple[str, Any]] = [
    *[("format", v) for v in ("pirf-dataset", None, 1)],
    *[("format_version", v) for v in (2, "1", 1.0, True, None)],
    *[("pirf_version", v) for v in (f"{_MAJOR}.{_MINOR + 1}.0", f"{_MAJOR + 1}.0", "abc", "", None, 0.1)],
    *[("sha256", v) for v in ("0" * 64, None)],
    *[("pde", v) for v in ("darcy", "burgers", "kolmogorov", "wave", "", None, ["poisson"])],
    *[("pde_params", v) for v in ({"nu": 1}, {"alpha": "x"}, [], None)],
    *[("fields", v) for v in (["a", "u"], ["u"], ["f", "u", "w"], "fu", None)],
    *[("resolution", v) for v in (32, 8, 0, "16", 16.0, None)],
    *[("normalization", v) for v in ({}, {"shift": [0], "scale": [1]}, {"shift": [0, 0], "scale": [0, 1]})],
    *[("normalization", v) for v in ({"shift": [0, 0], "scale": [1, "x"]}, [], None)],
    *[("model", v) for v in (None, [], "edm")],
    *[("model.kind", v) for v in ("vae", None)],
    *[("model.sigma_data", v) for v in ("x", None)],
    *[("model.unet.base_channels", v) for v in (16, 3, "8")],
    *[("model.unet.channel_mult", v) for v in ([1], [1, 2, 2], [], [0])],
    *[("model.unet.resolution", v) for v in (32, 8, 15)],
    *[("model.unet.channels", v) for v in (1, 3, 0)],
    ("model.unet.layers_per_block", 2),
    ("model.unet.attention_resolutions", [16]),
    ("model.unet.mid_attention", True),
    ("model.unet.bogus", 1),
    *[("data", v) for v in ("x", [])],
    *[("data.floor", v) for v in ("x", {"all": 1}, {"all": {"median_mse": "x"}})],
    ("data.seed", "x"),
]
"""Record entries set to values that no longer describe the weights (each must be refused)."""
RECORD_DELETIONS = (
    *("pde", "pde_params", "resolution", "normalization", "model", "format", "format_version"),
    *("pirf_version", "sha256", "model.unet", "model.kind"),
)
TENSOR_DTYPES = (
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
)


def _record_path(weights: Path) -> Path:
    return checkpoint_paths(weights)[1]


def _edit_record(key: str, value: Any = None, delete: bool = False) -> Damage:
    def apply(weights: Path) -> None:
        record = json.loads(_record_path(weights).read_text())
        *parents, last = key.split(".")
        node = record
        for part in parents:
            node = node[part]
        if delete:
            del node[last]
        else:
            node[last] = value
        _record_path(weights).write_text(json.dumps(record))

    return Damage(f"record {key} deleted" if delete else f"record {key} = {value!r}", apply)


def _retensor(name: str, edit: Callable[[dict[str, torch.Tensor], list[str]], None]) -> Damage:
    """Edit the tensors and save a consistent checkpoint of them (the checksum matches)."""

    def apply(weights: Path) -> None:
        tensors = load_file(weights)
        meta = ("format", "format_version", "pirf_version", "sha256")
        record = {k: v for k, v in json.loads(_record_path(weights).read_text()).items() if k not in meta}
        edit(tensors, sorted(k for k in tensors if k.startswith("ema.")))
        save_checkpoint(weights, tensors, record)

    return Damage(name, apply)


def _tensor_damage(kind: str, index: int, dtype: torch.dtype, name: str) -> Damage:
    def edit(tensors: dict[str, torch.Tensor], ema: list[str]) -> None:
        key = ema[index % len(ema)]
        if kind == "shape":
            shape = tensors[key].shape
            tensors[key] = torch.zeros(*shape[:-1], shape[-1] + 1) if shape else torch.zeros(2)
        elif kind == "rename":
            tensors[f"ema.{name}"] = tensors.pop(key)
        elif kind == "drop":
            del tensors[key]
        elif kind == "dtype":
            tensors[key] = tensors[key].to(dtype)
        elif kind == "extra":
            tensors[f"{key}_{name}"] = torch.zeros(3)
        else:  # no EMA weights at all
            for k in ema:
                del tensors[k]

    detail = {"dtype": f" to {dtype}", "rename": f" to ema.{name}", "extra": f" beside {name}"}.get(kind, "")
    return _retensor(f"tensor #{index} {kind}{detail} (checksum matches)", edit)


def _swap(kind: str) -> Damage:
    def apply(weights: Path) -> None:
        other = checkpoint_paths(weights.parent.parent / "other" / "latest")
        index = 0 if kind == "weights" else 1
        shutil.copy(other[index], checkpoint_paths(weights)[index])

    return Damage(f"{kind} swapped with another checkpoint's", apply)


def _resigned(content: bytes | float) -> Damage:
    """Weights replaced by garbage (or a prefix of themselves) with a record that vouches for them."""

    def apply(weights: Path) -> None:
        raw = weights.read_bytes()
        weights.write_bytes(raw[: int(content * len(raw))] if isinstance(content, float) else content)
        record = json.loads(_record_path(weights).read_text())
        record["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        _record_path(weights).write_text(json.dumps(record))

    shown = f"a {content:.4f} prefix" if isinstance(content, float) else repr(content[:16])
    return Damage(f"weights replaced by {shown}, checksum updated", apply)


def _garble_record(position: float, text: str) -> Damage:
    def apply(weights: Path) -> None:
        raw = _record_path(weights).read_bytes()
        at = int(position * len(raw))
        _record_path(weights).write_bytes(raw[:at] + text.encode() + raw[at + len(text.encode()) :])

    return Damage(f"record bytes at {position:.4f} overwritten by {text!r}", apply, must_fail=False)


def _truncate_part(index: int, fraction: float) -> Damage:
    def apply(weights: Path) -> None:
        _truncate(fraction)(checkpoint_paths(weights)[index])

    return Damage(f"{('weights', 'record')[index]} truncated at {fraction:.4f}", apply)


def _remove(index: int) -> Damage:
    return Damage(f"{('weights', 'record')[index]} missing", lambda w: checkpoint_paths(w)[index].unlink())


FRACTION = st.floats(0, 1, exclude_max=True)
CHECKPOINT_DAMAGE = st.one_of(
    st.builds(_truncate_part, st.sampled_from([0, 1]), FRACTION),
    st.builds(_garble_record, FRACTION, TEXT.filter(bool)),
    st.sampled_from(["[]", "null", '"x"', "1", "true", ""]).map(
        lambda t: Damage(f"record is {t!r}", lambda w: _record_path(w).write_text(t))
    ),
    st.sampled_from(RECORD_EDITS).map(lambda kv: _edit_record(*kv)),
    st.sampled_from(RECORD_DELETIONS).map(lambda k: _edit_record(k, delete=True)),
    st.builds(
        _tensor_damage,
        st.sampled_from(["shape", "rename", "drop", "dtype", "extra", "no-ema"]),
        st.integers(0, 10**6),
        st.sampled_from(TENSOR_DTYPES),
        NAMES,
    ),
    st.sampled_from(["weights", "record"]).map(_swap),
    st.one_of(st.binary(max_size=256), FRACTION).map(_resigned),
    st.sampled_from([0, 1]).map(_remove),
)


def copy_checkpoint(model: Path, ws: Path) -> Path:
    """The model and the latest training checkpoint of its run, copied into ``ws``: the weights
    path of the copied model."""
    pairs = ((model, ws / "ck" / "model"), (model.parent / "checkpoints" / "latest", ws / "other" / "latest"))
    for source, target in pairs:
        target.parent.mkdir()
        for a, b in zip(checkpoint_paths(source), checkpoint_paths(target), strict=True):
            shutil.copy(a, b)
    return ws / "ck" / "model.safetensors"
