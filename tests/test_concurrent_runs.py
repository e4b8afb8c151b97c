"""Many pirf commands at once (benchmarks/concurrent_runs.py --small): runs into separate folders
each write what they write alone; pairs into one output end in one winner and one clear refusal."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_concurrent_runs_apart_equal_their_solo_runs_and_shared_pairs_have_one_winner(tmp_path):
    out = tmp_path / "concurrent.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "concurrent_runs.py"), "--small", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
