"""Kill and resume: `pirf pretrain`, `pirf finetune`, `pirf data generate` and `pirf bench` run as
subprocesses, are killed with SIGKILL at named points (`pirf.files.crash_point`, chosen through
``PIRF_CRASH_AT``): mid checkpoint save, mid log append, between steps. Each is then resumed, and
the result must equal an uninterrupted run of the same seed bit for bit: weights with
`torch.equal`, logs line by line (wall-clock fields aside). After every kill, a copy of the folder
is recovered and read as ``--resume`` would, and the checkpoint it resumes from is checked.

The slow variants kill at more points, at random steps and at random times."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pirf import data
from pirf.evaluation.reference import reference_for
from pirf.files import CRASH_ENV, read_jsonl
from pirf.models.checkpoint import load_checkpoint, read_checkpoint_config, recover_checkpoint
from test_bench import FINETUNE

WALL_CLOCK = {"seconds", "samples_per_s", "train_seconds", "seconds_per_100", "created"}
"""Fields that measure time: they differ between any two runs."""


# -- running the CLI --------------------------------------------------------------------------------


def _env(crash: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return env | ({CRASH_ENV: crash} if crash else {})


def _start(args: list[str], cwd: Path, crash: str | None = None) -> subprocess.Popen:
    """``pirf ARGS`` in the background; its output goes to a log file in ``cwd`` (``proc.log``)."""
    log = cwd / f"pirf-{len(list(cwd.glob('pirf-*.log')))}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pirf.cli", *args], cwd=cwd, env=_env(crash), stdout=out, stderr=out
        )
    proc.log = log
    return proc


def _finish(proc: subprocess.Popen, expect: int = 0, what: str = "") -> None:
    code = proc.wait(timeout=600)
    assert code == expect, f"{what}: exit {code}, expected {expect}\n{proc.log.read_text()[-3000:]}"


def _run(args: list[str], cwd: Path, crash: str | None = None) -> None:
    """Run ``pirf ARGS`` to completion (exit 0)."""
    _finish(_start(args, cwd, crash), 0, " ".join(args[:2]))


KILL_LOG = "PIRF_KILL_LOG"
"""When set, a file to which every kill appends one JSON line (command, point or delay): the count
the reliability page quotes (`benchmarks/reliability.py`)."""


def _log_kill(args: list[str], **what) -> None:
    if os.environ.get(KILL_LOG):
        with open(os.environ[KILL_LOG], "a") as f:
            f.write(json.dumps({"command": " ".join(args[:2]), **what}) + "\n")


def _kill(args: list[str], cwd: Path, crash: str) -> None:
    """Run ``pirf ARGS`` with crash point ``crash`` armed; it must die of SIGKILL there."""
    _finish(_start(args, cwd, crash), -signal.SIGKILL, f"{args[0]} with {CRASH_ENV}={crash}")
    _log_kill(args, point=crash)


def _kill_after(args: list[str], cwd: Path, seconds: float) -> bool:
    """Run ``pirf ARGS`` and SIGKILL it after ``seconds``; False if it finished first."""
    proc = _start(args, cwd)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        _finish(proc, -signal.SIGKILL, "killed at a random time")
        _log_kill(args, after_seconds=round(seconds, 3))
        return True
    _finish(proc, 0, "ran before its random kill")
    return False


# -- comparing runs ---------------------------------------------------------------------------------


def _timeless(obj):
    """``obj`` without wall-clock fields, at any depth."""
    if isinstance(obj, dict):
        return {k: _timeless(v) for k, v in obj.items() if k not in WALL_CLOCK}
    if isinstance(obj, list):
        return [_timeless(v) for v in obj]
    return obj


def _log(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), f"{path} ends in a torn line"
    return [_timeless(r) for r in read_jsonl(path)]


def _assert_same_weights(a: Path, b: Path) -> None:
    ta, tb = load_checkpoint(a)[0], load_checkpoint(b)[0]
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"{b.name}: {key} differs from the uninterrupted run"


def _assert_no_temporaries(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if ".tmp-" in p.name]
    assert not left, f"temporaries left behind: {left}"


def _resume_point(run: Path, key: str) -> int | None:
    """What ``--resume`` finds in a killed run, read from a copy: the checkpoint's ``key`` (after
    finishing a save killed between its renames) or None (no checkpoint: the run starts over). The
    copy's logs and checkpoint must read without error."""
    probe = run.with_name(run.name + "-probe")
    shutil.rmtree(probe, ignore_errors=True)
    shutil.copytree(run, probe)
    try:
        for log in probe.glob("*.jsonl"):
            read_jsonl(log)
        if not recover_checkpoint(probe / "checkpoints" / "latest"):
            return None
        return int(load_checkpoint(probe / "checkpoints" / "latest")[1][key])
    finally:
        shutil.rmtree(probe)


def _kill_chain(fresh: list[str], resume: list[str], run: Path, key: str, kills, cwd: Path) -> None:
    """Kill the run at each (crash point, resume point it must leave) in turn, resuming after each,
    then let it finish."""
    for i, (crash, expected) in enumerate(kills):
        _kill(resume if i else fresh, cwd, crash)
        assert _resume_point(run, key) == expected, f"after a kill at {crash}"
    _run(resume, cwd)


def _kill_at_random_times(fresh, resume, run: Path, key: str, rng, window, cwd: Path, kills: int = 4) -> None:
    """Kill the run ``kills`` times after random delays in ``window`` (s), resuming after each; the
    checkpoint it resumes from never goes back. Then let it finish."""
    last = -1
    for _ in range(kills):
        started = (run / "config.json").exists()  # a kill during start-up leaves nothing to resume
        if not _kill_after(resume if started else fresh, cwd, rng.uniform(*window)):
            break
        point = _resume_point(run, key) if run.exists() else None
        assert (point if point is not None else -1) >= last, "a resume point went back"
        last = point if point is not None else last
    _run(resume if (run / "config.json").exists() else fresh, cwd)


# -- pretrain ---------------------------------------------------------------------------------------


def _pretrain_args(data_file: Path, out: Path, steps: int, checkpoint_every: int) -> list[str]:
    settings = {
        "data.path": data_file,
        "out": out,
        "steps": steps,
        "batch_size": 8,
        "log_every": 2,
        "checkpoint_every": checkpoint_every,
        "warmup_steps": 1,
        "lr": 1e-3,
        "model.base_channels": 8,
        "model.channel_mult": "[1, 2]",
        "model.mid_attention": "false",
    }
    return ["pretrain", *[a for k, v in settings.items() for a in ("-p", f"{k}={v}")]]


@pytest.fixture(scope="module")
def poisson_file(rough_poisson_model):
    return Path(rough_poisson_model).parent.parent / "poisson.h5"  # its training set (64 samples, 16x16)


def _check_pretrain(poisson_file: Path, tmp_path: Path, kills, steps: int = 8, every: int = 3) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    reference = _start(_pretrain_args(poisson_file, straight, steps, every), tmp_path)
    fresh = _pretrain_args(poisson_file, split, steps, every)
    if callable(kills):
        kills(fresh, [*fresh, "--resume"], split)
    else:
        _kill_chain(fresh, [*fresh, "--resume"], split, "step", kills, tmp_path)
    _finish(reference, 0, "uninterrupted pretrain")
    _assert_same_weights(straight / "model", split / "model")
    _assert_same_weights(straight / "checkpoints" / "latest", split / "checkpoints" / "latest")
    assert _log(split / "metrics.jsonl") == _log(straight / "metrics.jsonl")
    assert [r["step"] for r in read_jsonl(split / "metrics.jsonl")] == list(range(2, steps + 1, 2))
    _assert_no_temporaries(split)


def test_pretrain_killed_mid_save_and_mid_log_resumes_to_the_same_model(poisson_file, tmp_path):
    kills = [
        ("checkpoint.between-renames[latest]:1", 3),  # first save: new weights, no record yet
        ("append.metrics:2", 3),  # the step-6 log line torn, before the step-6 checkpoint
    ]
    _check_pretrain(poisson_file, tmp_path, kills)


@pytest.mark.slow
def test_pretrain_killed_at_every_point_resumes_to_the_same_model(poisson_file, tmp_path):
    kills = [
        ("pretrain.step:2", None),  # before any checkpoint: the run starts over
        ("checkpoint.weights-written[latest]:1", None),  # a stale weights temporary
        ("checkpoint.between-renames[latest]:1", 3),
        ("append.metrics:2", 3),
        ("checkpoint.record-written[latest]:1", 3),  # both temporaries complete, nothing renamed
        ("checkpoint.renamed[latest]:1", 6),
        ("pretrain.step:2", 6),
        ("checkpoint.between-renames[model]:1", 8),  # the exported model half renamed
    ]
    _check_pretrain(poisson_file, tmp_path, kills)


@pytest.mark.slow
def test_pretrain_killed_at_random_steps_and_times_resumes_to_the_same_model(poisson_file, tmp_path):
    seed = random.randrange(2**16)
    rng = random.Random(seed)

    def kills(fresh, resume, run):
        steps = [f"pretrain.step:{rng.randint(1, 40)}" for _ in range(3)]
        for i, crash in enumerate(steps):
            _kill(resume if i else fresh, tmp_path, crash)
        _kill_at_random_times(fresh, resume, run, "step", rng, (3.0, 9.0), tmp_path)

    try:
        _check_pretrain(poisson_file, tmp_path, kills, steps=160, every=7)
    except AssertionError as err:
        raise AssertionError(f"random seed {seed}: {err}") from err


# -- finetune ---------------------------------------------------------------------------------------


def _finetune_args(base: Path, out: Path, iterations: int) -> list[str]:
    settings = {
        "out": out,
        "iterations": iterations,
        "batch_size": 4,
        "sampler.steps": 4,
        "lr": 1e-3,
        "warmup_iterations": 1,
        "eval.every": 2,
        "eval.n": 4,
        "eval.n_reference": 16,
        "regularization.ema_halflife_samples": 8.0,
        "regularization.alphas": "[0.5]",
        "log_every": 1,
        "checkpoint_every": 2,
    }
    return ["finetune", str(base), *[f"{k}={v}" for k, v in settings.items()]]


@pytest.fixture(scope="module")
def base_model(rough_poisson_model):
    """The rough Poisson model, with its held-out reference set solved once here (the concurrent
    runs then only read the cache)."""
    reference_for(read_checkpoint_config(rough_poisson_model), None, 16, progress=False)
    return rough_poisson_model


def _check_finetune(base: Path, tmp_path: Path, kills, iterations: int = 4) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    reference = _start(_finetune_args(base, straight, iterations), tmp_path)
    fresh = _finetune_args(base, split, iterations)
    if callable(kills):
        kills(fresh, [*fresh, "--resume"], split)
    else:
        _kill_chain(fresh, [*fresh, "--resume"], split, "iteration", kills, tmp_path)
    _finish(reference, 0, "uninterrupted finetune")
    for name in ("model", "checkpoints/latest"):
        _assert_same_weights(straight / name, split / name)
    for name in ("metrics.jsonl", "evals.jsonl"):
        assert _log(split / name) == _log(straight / name), name
    assert [r["iteration"] for r in read_jsonl(split / "metrics.jsonl")] == list(range(1, iterations + 1))
    assert json.loads((split / "selection.json").read_text()) == json.loads(
        (straight / "selection.json").read_text()
    )
    _assert_no_temporaries(split)


def test_finetune_killed_mid_log_and_mid_save_resumes_to_the_same_model(base_model, tmp_path):
    kills = [
        ("append.evals:2", None),  # the iteration-2 eval line torn, before the first checkpoint
        ("checkpoint.between-renames[latest]:1", 2),
    ]
    _check_finetune(base_model, tmp_path, kills)


@pytest.mark.slow
def test_finetune_killed_at_every_point_resumes_to_the_same_model(base_model, tmp_path):
    kills = [
        ("finetune.iteration:2", None),
        ("append.evals:2", None),
        ("checkpoint.weights-written[latest]:1", None),
        ("checkpoint.between-renames[latest]:1", 2),
        ("finetune.iteration:2", 2),
        ("checkpoint.renamed[latest]:1", 4),
        ("append.metrics:2", 4),
        ("checkpoint.record-written[latest]:1", 4),
        ("checkpoint.between-renames[model]:1", 6),  # the selected model half renamed
    ]
    _check_finetune(base_model, tmp_path, kills, iterations=6)


@pytest.mark.slow
def test_finetune_killed_at_random_iterations_and_times_resumes_to_the_same_model(base_model, tmp_path):
    seed = random.randrange(2**16)
    rng = random.Random(seed)

    def kills(fresh, resume, run):
        for i in range(3):
            _kill(resume if i else fresh, tmp_path, f"finetune.iteration:{rng.randint(1, 12)}")
        _kill_at_random_times(fresh, resume, run, "iteration", rng, (4.0, 9.0), tmp_path)

    try:
        _check_finetune(base_model, tmp_path, kills, iterations=40)
    except AssertionError as err:
        raise AssertionError(f"random seed {seed}: {err}") from err


# -- data generate ----------------------------------------------------------------------------------


def _generate_args(out: Path, n: int) -> list[str]:
    options = {"--n": n, "--resolution": 16, "--seed": 3, "--chunk": 4, "--out": out}
    return ["data", "generate", "poisson", *[str(a) for k, v in options.items() for a in (k, v)]]


def _temporaries(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.tmp-*"))


def _assert_same_data(a: Path, b: Path) -> None:
    assert np.array_equal(data.read_fields(a), data.read_fields(b))
    assert _timeless(data.read_info(a).summary() | {"path": ""}) == _timeless(
        data.read_info(b).summary() | {"path": ""}
    )


def _check_generate(tmp_path: Path, crashes: list[str], n: int = 12) -> None:
    straight, split = tmp_path / "straight.h5", tmp_path / "split.h5"
    reference = _start(_generate_args(straight, n), tmp_path)
    seen: list[Path] = []
    for crash in crashes:
        _kill(_generate_args(split, n), tmp_path, crash)
        left = _temporaries(split)
        assert not split.exists() and len(left) == 1 and left[0] not in seen, crash  # the older one removed
        seen += left
    _run(_generate_args(split, n), tmp_path)  # a rerun: cleans up, writes the whole file
    _finish(reference, 0, "uninterrupted data generate")
    _assert_same_data(straight, split)
    assert _temporaries(split) == []


def test_data_generate_killed_mid_file_leaves_no_half_file_and_reruns_to_the_same_data(tmp_path):
    _check_generate(tmp_path, ["data.chunk-written:2", "data.complete:1"])


@pytest.mark.slow
def test_data_generate_killed_at_random_chunks_and_times(tmp_path):
    seed = random.randrange(2**16)
    rng = random.Random(seed)
    crashes = [f"data.chunk-written:{rng.randint(1, 50)}" for _ in range(3)]
    try:
        _check_generate(tmp_path, crashes, n=200)
        out, args = tmp_path / "timed.h5", _generate_args(tmp_path / "timed.h5", 200)
        for _ in range(3):
            if not _kill_after(args, tmp_path, rng.uniform(2.0, 6.0)):
                break
            assert len(_temporaries(out)) <= 1 and (not out.exists() or data.read_info(out).n == 200)
            if out.exists():  # killed after the rename: the file is whole
                break
        if not out.exists():
            _run(args, tmp_path)
        _assert_same_data(tmp_path / "straight.h5", out)
    except AssertionError as err:
        raise AssertionError(f"random seed {seed}: {err}") from err


# -- bench ------------------------------------------------------------------------------------------

FINETUNE_YAML = FINETUNE  # the bench tests' tiny fine-tune


def _bench_args(base: Path, out: Path, finetune_yaml: Path) -> list[str]:
    settings = {"base": base, "finetune_config": finetune_yaml, "n": 6, "sweep_n": 4, "n_reference": 16}
    return [
        *("bench", "--benchmarks", "poisson", "--methods", "base,pirf", "--out", str(out)),
        *[f"{k}={v}" for k, v in settings.items()],
        *("steps=[4]", "transfer_steps=[]"),
    ]


def _check_bench(base: Path, tmp_path: Path, crashes: list[tuple[str, int | None]]) -> None:
    """Kill the bench at each (crash point, resume point it leaves the pirf row's fine-tune), resume
    it each time, and compare with an uninterrupted bench: finished cells are never redone."""
    (tmp_path / "ft.yaml").write_text(FINETUNE_YAML)
    straight, split = tmp_path / "straight", tmp_path / "split"
    reference = _start(_bench_args(base, straight, tmp_path / "ft.yaml"), tmp_path)
    fresh = _bench_args(base, split, tmp_path / "ft.yaml")
    kept: dict[Path, tuple[bytes, int]] = {}
    for i, (crash, expected) in enumerate(crashes):
        _kill([*fresh, "--resume"] if i else fresh, tmp_path, crash)
        finetune_run = split / "models" / "poisson" / "pirf"
        point = _resume_point(finetune_run, "iteration") if finetune_run.exists() else None
        assert point == expected, f"after a kill at {crash}"
        for cell in (split / "cells").rglob("*.json"):  # finished cells: kept as they are
            kept.setdefault(cell, (cell.read_bytes(), cell.stat().st_mtime_ns))
    assert kept, "no cell was finished before the kills"
    _run([*fresh, "--resume"], tmp_path)
    _finish(reference, 0, "uninterrupted bench")
    for cell, (content, mtime) in kept.items():
        assert cell.read_bytes() == content and cell.stat().st_mtime_ns == mtime, f"{cell.name} was redone"
    table = [_timeless(json.loads((run / "table.json").read_text())) for run in (straight, split)]
    assert table[0] == table[1] and len(table[0]["cells"]) == 2
    for name in ("base@4.npy", "pirf@4.npy"):
        a, b = (np.load(run / "samples" / "poisson" / name) for run in (straight, split))
        assert np.array_equal(a, b), name
    _assert_same_weights(straight / "models/poisson/pirf/model", split / "models/poisson/pirf/model")
    _assert_no_temporaries(split)


def test_bench_killed_inside_a_finetune_keeps_its_finished_cell_and_the_table(base_model, tmp_path):
    # the base row's cell is done when the pirf row's fine-tune is killed in its first save
    _check_bench(base_model, tmp_path, [("checkpoint.between-renames[latest]:1", 2)])


@pytest.mark.slow
def test_bench_killed_at_every_point_keeps_cells_and_the_table(base_model, tmp_path):
    crashes = [
        ("bench.samples-written:1", None),  # the base cell's samples written, its record not
        ("bench.cell-written:1", None),
        ("append.evals:2", None),  # inside the pirf row's fine-tune
        ("checkpoint.between-renames[latest]:2", 4),
        ("checkpoint.between-renames[model]:1", 4),  # the fine-tuned model half renamed: not "done"
        ("bench.samples-written:1", 4),
    ]
    _check_bench(base_model, tmp_path, crashes)
