"""`pirf export`: a plain diffusers folder that samples, without pirf, what pirf samples."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pirf import pdes
from pirf.errors import OutputExistsError
from pirf.models.backbone import UNetConfig
from pirf.models.checkpoint import save_checkpoint
from pirf.models.export import export_model
from pirf.models.factory import build_denoiser, describe
from pirf.models.loading import load_model
from pirf.normalization import Normalization
from pirf.sampling import SAMPLERS
from pirf.sampling.draw import sigma_grid

ROOT = Path(__file__).resolve().parents[1]
SAMPLER = ROOT / "examples" / "sample_exported.py"
# Runs the example with pirf hidden: any `import pirf` in it fails, and none may have happened.
PIRF_FREE = (
    "import runpy, sys\n"
    "sys.modules['pirf'] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "assert not [m for m in sys.modules if m.startswith('pirf.')]\n"
)


def _pirf_samples(model, record, z: torch.Tensor, steps: int) -> torch.Tensor:
    sigmas = sigma_grid(model, steps, "heun").to(torch.float32)
    with torch.no_grad():
        x = SAMPLERS["heun"](model, z, sigmas).x0
    return Normalization.from_dict(record["normalization"]).denormalize(x)


def _pirf_free_samples(folder: Path, z: torch.Tensor, steps: int, tmp_path: Path) -> torch.Tensor:
    torch.save(z, tmp_path / "z.pt")
    out = tmp_path / "x.pt"
    cmd = [sys.executable, "-c", PIRF_FREE, str(SAMPLER), str(folder), str(out)]
    cmd += ["--steps", str(steps), "--noise", str(tmp_path / "z.pt")]
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path, timeout=300)
    return torch.load(out)


def _same_samples_and_residual(model, record, tmp_path: Path, steps: int = 5) -> None:
    folder = export_model(model, record, tmp_path / "export")
    c, r = model.channels, model.resolution
    z = torch.randn(3, c, r, r, generator=torch.Generator().manual_seed(0))
    ours = _pirf_samples(model, record, z, steps)
    theirs = _pirf_free_samples(folder, z, steps, tmp_path)
    scale = float(ours.abs().max())
    assert torch.allclose(theirs, ours, rtol=1e-3, atol=1e-4 * scale)  # float32 round-off
    pde = pdes.get(record["pde"], **record["pde_params"])
    r_ours = pde.residual(ours.double()).pow(2).mean(dim=(1, 2))
    r_theirs = pde.residual(theirs.double()).pow(2).mean(dim=(1, 2))
    assert torch.allclose(r_theirs, r_ours, rtol=1e-3)


@pytest.mark.parametrize("fixture", ["rough_poisson_model", "tiny_poisson_flow_model"])
def test_export_samples_like_pirf_without_pirf(fixture, request, tmp_path):
    model, record, _ = load_model(request.getfixturevalue(fixture))
    _same_samples_and_residual(model, record, tmp_path)
    meta = json.loads((tmp_path / "export" / "pirf.json").read_text())
    assert meta["kind"] == record["model"]["kind"]
    assert meta["normalization"]["scale"] == record["normalization"]["scale"]
    assert meta["fields"] == ["f", "u"] and meta["periodic"] is None and meta["conditioning"] == []


def _untrained(pde_name: str, periodic: str, resolution: int = 16):
    """A randomly initialized model of ``pde_name`` (with its conditioning fields) and its record:
    the export must reproduce whatever the network computes, trained or not."""
    pde = pdes.get(pde_name)
    torch.manual_seed(1)
    unet = UNetConfig(
        channels=len(pde.fields),
        resolution=resolution,
        base_channels=8,
        channel_mult=(1, 2),
        periodic=periodic,
    )
    model = build_denoiser("edm", unet, 1.0, pde.conditioning(resolution)).eval()
    norm = Normalization(tuple(0.1 * i for i in range(len(pde.fields))), (2.0,) * len(pde.fields))
    record = {
        "pde": pde.name,
        "pde_params": pde.params(),
        "fields": list(pde.fields),
        "resolution": resolution,
        "normalization": norm.to_dict(),
        "model": describe(model),
    }
    return model, record


@pytest.mark.parametrize(("pde_name", "periodic"), [("kolmogorov", "xy"), ("burgers", "x")])
def test_export_keeps_periodic_padding_and_conditioning(pde_name, periodic, tmp_path):
    model, record = _untrained(pde_name, periodic)
    _same_samples_and_residual(model, record, tmp_path, steps=3)
    meta = json.loads((tmp_path / "export" / "pirf.json").read_text())
    assert meta["periodic"] == periodic
    expected = [f.name for f in pdes.get(pde_name).conditioning(16)]
    assert [c["name"] for c in meta["conditioning"]] == expected
    assert (tmp_path / "export" / "conditioning.safetensors").exists() == bool(expected)


def test_export_of_a_saved_model_loads_the_same_network(tmp_path):
    """Through a checkpoint file and `load_model`, as `pirf export` does."""
    model, record = _untrained("kolmogorov", "xy")
    ema = {f"ema.{k}": v for k, v in model.state_dict().items()}
    data = {"path": None, "seed": 0, "floor": {}}
    path = save_checkpoint(tmp_path / "model", ema, {**record, "data": data, "stage": "pretrain"})
    loaded, loaded_record, _ = load_model(path)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded(x, 0.7), model(x, 0.7))
    folder = export_model(loaded, loaded_record, tmp_path / "export")
    meta = json.loads((folder / "pirf.json").read_text())
    assert [c["name"] for c in meta["conditioning"]] == ["sin(4y)", "cos(4y)"]
    assert [c["channel"] for c in meta["conditioning"]] == [3, 4]


def test_export_refuses_an_existing_folder_and_leaves_nothing_half_made(tmp_path):
    model, record = _untrained("poisson", None)
    (tmp_path / "export").mkdir()
    with pytest.raises(OutputExistsError):
        export_model(model, record, tmp_path / "export")
    export_model(model, record, tmp_path / "export", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_docs_show_the_sampler_that_is_tested():
    """docs/export.md carries examples/sample_exported.py verbatim, so the page stays true."""
    page = (ROOT / "docs" / "export.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert SAMPLER.read_text() in blocks


def test_conditioning_tells_the_network_the_row_but_not_the_column():
    """Kolmogorov's forcing depends on y only: with sin/cos(4y) fed in, a periodic network stays
    shift-equivariant along x and stops being so along y."""
    model, _ = _untrained("kolmogorov", "xy")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        out = model(x, 1.0)
        along_x = model(torch.roll(x, 2, dims=-1), 1.0)
        along_y = model(torch.roll(x, 2, dims=-2), 1.0)  # half a forcing period
    assert torch.allclose(along_x, torch.roll(out, 2, dims=-1), atol=1e-5)
    assert not torch.allclose(along_y, torch.roll(out, 2, dims=-2), atol=1e-3)
    fields = np.stack([f.values for f in pdes.get("kolmogorov").conditioning(16)])
    assert np.allclose(model.backbone.condition.numpy(), fields)
