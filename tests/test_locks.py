"""One writer per output (`pirf.locks`): a second writer is refused, a dead one is no obstacle."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pirf.errors import OutputLockedError
from pirf.locks import lock_path, output_lock

HOLD = textwrap.dedent(
    """
    import sys, time
    from pirf.locks import output_lock
    with output_lock(sys.argv[1], "a test output"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def holder(target, seconds):
    """A process holding ``target``'s lock for ``seconds``, started once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_and_told_who_holds_it(tmp_path):
    target = tmp_path / "run"
    with output_lock(target, "a pretraining run"):
        refused = pytest.raises(OutputLockedError, match=rf"being written by pid {os.getpid()}")
        with refused as err, output_lock(target, "a pretraining run"):
            pass
        assert "another output" in err.value.fix
    assert not lock_path(target).exists()  # released and removed
    with output_lock(target, "a pretraining run"):  # free again
        pass


def test_a_killed_holder_leaves_no_obstacle(tmp_path):
    target = tmp_path / "data.h5"
    proc = holder(target, 60)
    with pytest.raises(OutputLockedError, match=f"pid {proc.pid}"), output_lock(target, "a data set"):
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock_path(target).exists()  # the dead holder's file is still there ...
    with output_lock(target, "a data set"):  # ... and does not block
        pass


def test_a_waiting_writer_takes_over_when_the_holder_finishes(tmp_path):
    target = tmp_path / "cache.h5"
    proc = holder(target, 1.0)
    t0 = time.perf_counter()
    with output_lock(target, "a cache", wait=True):
        assert time.perf_counter() - t0 >= 0.9  # it came only when the holder let go
    proc.wait()


def test_other_ranks_of_a_launcher_do_not_lock(tmp_path, monkeypatch):
    target = tmp_path / "run"
    with output_lock(target, "a run"):
        monkeypatch.setenv("RANK", "1")
        with output_lock(target, "a run"):  # rank 1 writes nothing, so it holds nothing
            pass


def test_cli_data_generate_refuses_an_output_being_written(tmp_path):
    target = tmp_path / "p.h5"
    with output_lock(target, "a data set"):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pirf.cli",
                "data",
                "generate",
                "poisson",
                "--n",
                "2",
                "--out",
                str(target),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 2, run.stderr
    message = " ".join(run.stderr.split())
    assert f"being written by pid {os.getpid()}" in message and "Traceback" not in message
    assert not target.exists()


def test_finetune_into_a_folder_being_written_is_refused_before_it_writes(tmp_path, tiny_poisson_model):
    from pirf.finetune import FinetuneConfig, finetune

    out = tmp_path / "ft"
    with output_lock(out, "a fine-tuning run"):
        t0 = time.perf_counter()
        with pytest.raises(OutputLockedError):
            finetune(FinetuneConfig(base=str(tiny_poisson_model), out=str(out), iterations=2), progress=False)
        assert time.perf_counter() - t0 < 30
    assert not out.exists()  # nothing half-made


def test_held_out_reference_waits_for_another_run_solving_it(tmp_path):
    from pirf import data, pdes
    from pirf.evaluation.reference import held_out_reference, reference_path

    pde = pdes.get("poisson")
    path = reference_path(pde, 16, 5, 4, tmp_path)
    proc = holder(path, 1.0)  # another run is solving this very set
    t0 = time.perf_counter()
    solved = held_out_reference(pde, 16, 5, 4, root=tmp_path, progress=False)
    assert time.perf_counter() - t0 >= 0.9  # it waited for that run instead of failing or racing it
    assert solved == path and data.read_info(path).n == 4
    proc.wait()
