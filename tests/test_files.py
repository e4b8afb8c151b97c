"""`pirf.files`: atomic writes, JSONL logs that survive a torn append, stale temporaries of killed
writers, and the crash points the kill-and-resume tests use."""

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

from pirf import files
from pirf.errors import DataFileError


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def _run(code: str, crash: str) -> subprocess.CompletedProcess:
    env = {**os.environ, files.CRASH_ENV: crash}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "a.txt"
    files.write_text(path, "old")
    files.write_text(path, "new")
    assert path.read_text() == "new"

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(path, fail)
    with pytest.raises(ValueError):  # NaN in strict JSON: refused before anything is written
        files.write_json(path, {"x": float("nan")}, allow_nan=False)
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    files.write_json(path, {"x": [1, 2.5]})
    assert json.loads(path.read_text()) == {"x": [1, 2.5]} and path.read_text().endswith("\n")


def test_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    data = os.urandom(3 * 2**20 + 17)  # more than one read block
    path.write_bytes(data)
    assert files.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_jsonl_log_drops_a_torn_last_line_and_refuses_a_corrupt_one(tmp_path):
    log = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3):
        files.append_jsonl(log, {"step": step, "loss": 0.1 * step})
    assert [r["step"] for r in files.read_jsonl(log)] == [1, 2, 3]
    with log.open("a") as f:
        f.write('{"step": 4, "lo')  # a writer killed mid-append
    assert [r["step"] for r in files.read_jsonl(log)] == [1, 2, 3]
    with log.open("a") as f:
        f.write('{"step": 4}')  # even a torn line that parses: its newline never came
    assert [r["step"] for r in files.read_jsonl(log)] == [1, 2, 3]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1}\n{"step": 2, \n{"step": 3}\n')
    with pytest.raises(DataFileError, match="line 2"):
        files.read_jsonl(bad)


def test_truncate_keeps_earlier_lines_byte_for_byte_and_drops_the_torn_one(tmp_path):
    log = tmp_path / "evals.jsonl"
    lines = ['{"iteration": 0, "x": 0.30000000000000004}', '{"iteration": 2}', '{"iteration": 4}']
    log.write_text("\n".join(lines) + '\n{"iteration": 6, "x"')
    files.truncate_jsonl(log, "iteration", 2)
    assert log.read_text() == lines[0] + "\n" + lines[1] + "\n"
    files.truncate_jsonl(log, "iteration", -1)
    assert log.read_text() == ""
    files.truncate_jsonl(tmp_path / "missing.jsonl", "iteration", 3)
    assert not (tmp_path / "missing.jsonl").exists()


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "model.json"
    dead, alive = _dead_pid(), os.getppid()
    stale = [tmp_path / f".model.json.tmp-{dead}", tmp_path / f"model.json.tmp-{dead}"]  # new and old naming
    kept = [tmp_path / f".model.json.tmp-{alive}", files.temporary_path(target), tmp_path / ".other.tmp-1"]
    for p in stale + kept:
        p.write_text("x")
    assert files.remove_stale_temporaries(target) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    files.write_text(target, "{}")  # every atomic write cleans up after killed writers of its target
    assert not any(p.exists() for p in stale) and target.read_text() == "{}"


def test_crash_plan_parsing():
    assert files._crash_plan(None) is None and files._crash_plan("") is None
    assert files._crash_plan("a:2, checkpoint.renamed[latest]:1") == {"a": 2, "checkpoint.renamed[latest]": 1}
    for bad in ("a", "a:0", ":3", "a:x"):
        with pytest.raises(ValueError, match="name:n"):
            files._crash_plan(bad)


def test_crash_point_kills_at_the_nth_hit_and_counts_each_where():
    code = (
        "from pirf.files import crash_point\n"
        "for i in range(5):\n"
        "    crash_point('step', 'even' if i % 2 == 0 else 'odd')\n"
        "    print(i, flush=True)\n"
    )
    assert _run(code, "step:3").returncode == -signal.SIGKILL
    assert _run(code, "step:3").stdout.split() == ["0", "1"]
    assert _run(code, "step[odd]:2").stdout.split() == ["0", "1", "2"]  # the 2nd odd hit is i = 3
    done = _run(code, "other:1")
    assert done.returncode == 0 and done.stdout.split() == ["0", "1", "2", "3", "4"]


def test_a_kill_mid_append_leaves_a_torn_line_that_readers_skip(tmp_path):
    log = tmp_path / "metrics.jsonl"
    code = (
        "from pirf.files import append_jsonl\n"
        f"for step in range(3): append_jsonl({str(log)!r}, {{'step': step, 'loss': 1.5}})\n"
    )
    assert _run(code, "append.metrics:2").returncode == -signal.SIGKILL
    text = log.read_text()
    assert text.count("\n") == 1 and not text.endswith("\n") and len(text) > len('{"step": 0}\n')
    assert files.read_jsonl(log) == [{"step": 0, "loss": 1.5}]
    files.append_jsonl(log, {"step": 1, "loss": 2.5})  # the next append cuts the torn line off first
    assert files.read_jsonl(log) == [{"step": 0, "loss": 1.5}, {"step": 1, "loss": 2.5}]
    assert log.read_text().endswith("2.5}\n")
