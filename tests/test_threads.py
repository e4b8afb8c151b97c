"""The CPU thread count: chosen by load unless named, said, and taken again on resume."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pirf import threads
from pirf.errors import ConfigError
from pirf.threads import choose_threads, follow_recorded


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    threads._current = None
    threads._requested = None


@pytest.mark.parametrize(
    ("cores", "load", "default", "expected"),
    [
        (2, 0.1, 2, 2),  # idle: all of them
        (2, 1.0, 2, 1),  # one other CPU-bound job: the core it leaves
        (2, 2.3, 2, 1),  # two or more: still one, never zero
        (16, 3.0, 8, 8),  # never above torch's own default (physical cores)
        (16, 11.6, 16, 4),
    ],
)
def test_the_count_follows_the_load(cores, load, default, expected):
    choice = choose_threads(None, default, environ={}, cores=cores, load=load)
    assert choice.threads == expected and choice.source == "load" and not choice.explicit
    assert f"{load:.1f}" in choice.describe() and "--threads" in choice.describe()


def test_a_named_count_wins_in_order_option_env_omp():
    env = {"PIRF_THREADS": "3", "OMP_NUM_THREADS": "5"}
    assert choose_threads(2, 8, environ=env, cores=16, load=0.0).threads == 2
    assert choose_threads(None, 8, environ=env, cores=16, load=0.0).threads == 3
    omp = choose_threads(None, 5, environ={"OMP_NUM_THREADS": "5"}, cores=16, load=15.0)
    assert omp.threads == 5 and omp.explicit and "OMP_NUM_THREADS=5" in omp.describe()


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_thread_count_is_refused_with_its_fix(value):
    with pytest.raises(ConfigError, match="PIRF_THREADS"):
        choose_threads(None, 2, environ={"PIRF_THREADS": value}, cores=2, load=0.0)
    with pytest.raises(ConfigError, match="at least 1"):
        threads.request_threads(0)


def test_a_resume_takes_the_recorded_count_unless_one_was_named():
    torch.set_num_threads(1)
    note = follow_recorded(2)
    assert torch.get_num_threads() == 2 and "started with" in note
    assert follow_recorded(2) is None  # already equal: nothing to say
    threads._current = threads.ThreadChoice(1, "option", "--threads")
    torch.set_num_threads(1)
    note = follow_recorded(2)
    assert torch.get_num_threads() == 1 and "round-off" in note


def test_cli_says_the_count_and_takes_the_option(tmp_path):
    from typer.testing import CliRunner

    from pirf.cli import app

    out = tmp_path / "d.h5"
    result = CliRunner().invoke(
        app,
        [
            "--threads",
            "1",
            "data",
            "generate",
            "poisson",
            "--n",
            "2",
            "--resolution",
            "16",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "threads: 1 (--threads)" in result.output and torch.get_num_threads() == 1


def test_a_zero_thread_option_exits_2_with_its_fix(capsys):
    from pirf.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--threads", "0", "pdes"])
    assert exit_info.value.code == 2 and "at least 1" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="Linux run queue")
def test_busy_jobs_are_counted_now_not_a_minute_later():
    """Two CPU-bound jobs started just now count as 2 busy cores at once (the 1-minute load
    average would take a minute to see them; it only caps the count)."""
    jobs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.3)
        assert threads.running_elsewhere() >= 2
    finally:
        for job in jobs:
            job.kill()
            job.wait()
