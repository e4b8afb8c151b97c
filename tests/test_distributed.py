"""Two CPU processes under torchrun (accelerate's MULTI_CPU over gloo) fine-tune in lockstep and
match one process with the same global batch, and pretrain (DDP) to a model that loads."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pirf.pdes as pdes
from pirf import data
from pirf.finetune import finetune
from pirf.models.factory import load_denoiser

WORKER = Path(__file__).parent / "workers" / "finetune_worker.py"
PRETRAIN_WORKER = WORKER.parent / "pretrain_worker.py"
sys.path.insert(0, str(WORKER.parent))
from finetune_worker import config  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lines(run, name):
    return [
        {k: v for k, v in json.loads(ln).items() if k != "seconds"}
        for ln in (run / name).read_text().splitlines()
    ]


def _torchrun_two(worker: Path, *args: object) -> None:
    """Run ``worker args...`` as two CPU processes under torchrun; fail with its stderr."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_port", str(_free_port()), str(worker), *map(str, args)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_stay_in_sync_and_match_one(tiny_poisson_model, tmp_path):
    two = tmp_path / "two"
    _torchrun_two(WORKER, tiny_poisson_model, two)
    ranks = [json.loads((two / f"checksum-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # bit-identical weights on both processes
    one = tmp_path / "one"
    finetune(config(str(tiny_poisson_model), str(one)), progress=False)
    a, b = _lines(one, "metrics.jsonl"), _lines(two, "metrics.jsonl")
    assert len(a) == len(b) == 4  # one writer: rank 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-9), key
    wa = load_denoiser(one / "model", weights="model")[0].state_dict()
    wb = load_denoiser(two / "model", weights="model")[0].state_dict()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-6)


def test_two_process_pretraining_writes_one_loadable_model(tmp_path):
    """DDP wraps the denoiser: the losses must reach it through the wrapper (a wrapped model has
    no ``channels``), and only rank 0 writes each run. EDM and flow, in one launch."""
    path = tmp_path / "poisson.h5"
    data.generate_dataset(pdes.get("poisson"), 32, path, resolution=16, progress=False)
    out = tmp_path / "runs"
    _torchrun_two(PRETRAIN_WORKER, path, out, "edm,flow")
    for kind in ("edm", "flow"):
        lines = (out / kind / "metrics.jsonl").read_text().splitlines()
        losses = [json.loads(ln)["loss"] for ln in lines]
        assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
        model, record = load_denoiser(out / kind / "model")
        assert record["config"]["model"]["kind"] == kind
        with torch.no_grad():
            x = model(torch.randn(2, 2, 16, 16), torch.full((2,), 0.5))
        assert torch.isfinite(x).all()
