"""`pirf sample` and `pirf evaluate`: model resolution, seeded prefix-stable sampling, the cost
count, sample files that `pirf data` reads and checks, reports against the data floor, and the
fidelity path scoring the data itself at 0 and a barely trained model far from it."""

import json
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

import pirf.pdes as pdes
from pirf import cli, data
from pirf.errors import DataFileError, OutputExistsError, UnknownNameError
from pirf.evaluation import figures, runner
from pirf.evaluation import reference as reference_module
from pirf.models import loading
from pirf.models.factory import load_denoiser
from pirf.normalization import Normalization
from pirf.sampling import draw as draw_module
from pirf.sampling import karras_sigmas, per_sample_noise, sample_heun

PNG = b"\x89PNG\r\n\x1a\n"
N_REFERENCE = 32


@pytest.fixture(scope="module")
def trained(rough_poisson_model):
    """A poisson data set (16x16, 64 samples) and a tiny EDM model trained on it for 4 steps."""
    root = rough_poisson_model.parent.parent
    path = root / "poisson.h5"
    model, record = load_denoiser(root / "run" / "model")
    reference = reference_module.held_out_reference(
        pdes.get("poisson"), 16, 10_000, N_REFERENCE, root=root / "cache", progress=False
    )
    return SimpleNamespace(
        root=root,
        data=path,
        run=root / "run",
        model=model,
        record=record,
        cache=root / "cache",
        ref=reference,
    )


# -- finding the model ---------------------------------------------------------------------------------
def test_resolve_model_specs(trained, tmp_path, monkeypatch):
    weights = trained.run / "model.safetensors"
    assert loading.resolve_model(trained.run) == weights
    assert loading.resolve_model(trained.run / "model") == weights
    assert loading.resolve_model(str(weights)) == weights
    assert loading.resolve_model(trained.run / "model.json") == weights

    shipped = tmp_path / "zoo" / "poisson" / "model.safetensors"
    monkeypatch.setattr(loading, "zoo_model", lambda name: tmp_path / "zoo" / name / "model.safetensors")
    with pytest.raises(DataFileError) as err:
        loading.resolve_model("poisson")
    message = str(err.value)
    assert "no shipped model" in message and "pirf pretrain poisson" in message
    assert "--model runs/pretrain/poisson/model.safetensors" in message
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"")
    assert loading.resolve_model("poisson") == shipped
    for variant in ("poisson-flow", "poisson-pirf"):  # the flow base and the fine-tune of the zoo
        assert loading.zoo_pde(variant) == "poisson"
        with pytest.raises(DataFileError, match=f"no shipped model '{variant}'"):
            loading.resolve_model(variant)
        (tmp_path / "zoo" / variant).mkdir()
        (tmp_path / "zoo" / variant / "model.safetensors").write_bytes(b"")
        assert loading.resolve_model(variant) == tmp_path / "zoo" / variant / "model.safetensors"
    assert loading.zoo_pde("poisson-best") is None and loading.zoo_pde("flow") is None

    with pytest.raises(UnknownNameError, match="did you mean 'poisson'") as err:
        loading.resolve_model("poison")
    assert "darcy" in str(err.value)  # lists the benchmarks
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(DataFileError, match=r"holds no model\.safetensors"):
        loading.resolve_model(tmp_path / "empty_run")


# -- sampling ------------------------------------------------------------------------------------------
def test_samples_are_seeded_per_sample(trained):
    def draw(n, seed=3, batch_size=4, sampler="heun"):
        return draw_module.generate_samples(
            trained.model, trained.record, n, 3, seed, sampler, batch_size=batch_size, progress=False
        ).fields

    four, eight = draw(4), draw(8)
    assert four.shape == (4, 2, 16, 16) and four.dtype == np.float32 and np.isfinite(eight).all()
    np.testing.assert_array_equal(four, eight[:4])  # n = 4 is a prefix of n = 8
    np.testing.assert_array_equal(four, draw(4))  # reproducible
    np.testing.assert_allclose(draw(8, batch_size=8)[:4], four, rtol=1e-4, atol=1e-5)  # any batch size
    assert not np.allclose(draw(4, seed=4), four)
    assert np.abs(four[:, 0] - four[:, 0].mean()).max() > 0  # fields vary
    # stochastic samplers draw their step noise from the same per-sample generators
    ddim = draw(2, sampler="ddim", batch_size=2)
    np.testing.assert_allclose(ddim, draw(4, sampler="ddim")[:2], rtol=1e-4, atol=1e-5)
    assert not np.allclose(ddim, draw(2, sampler="ddim", seed=4))


def test_samples_are_in_physical_units(trained):
    norm = trained.record["normalization"]
    drawn = draw_module.generate_samples(trained.model, trained.record, 4, 2, 0, batch_size=4, progress=False)
    gens = [torch.Generator().manual_seed(draw_module.sample_seed(0, i)) for i in range(4)]
    with torch.no_grad():
        x0 = sample_heun(trained.model, per_sample_noise((4, 2, 16, 16), gens), karras_sigmas(2).float()).x0
    expected = Normalization.from_dict(norm).denormalize(x0).numpy()
    np.testing.assert_allclose(drawn.fields, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("sampler", "calls"), [("heun", lambda s: 2 * s - 1), ("euler", lambda s: s)])
def test_network_calls_are_counted(trained, sampler, calls):
    count = {"n": 0}
    hook = trained.model.register_forward_hook(lambda *_: count.__setitem__("n", count["n"] + 1))
    try:
        drawn = draw_module.generate_samples(
            trained.model, trained.record, 6, 5, 0, sampler, batch_size=4, progress=False
        )
    finally:
        hook.remove()
    assert drawn.nfe_per_sample == calls(5)
    assert drawn.network_calls == count["n"] == 2 * calls(5)  # two batches (4 + 2)
    cost = drawn.cost()
    assert cost["samples_per_s"] > 0 and cost["seconds"] > 0 and cost["device"] == "cpu"


def test_sample_streams_each_batch_to_the_file_before_drawing_the_next(trained, tmp_path, monkeypatch):
    events = []
    write, draw = data.DatasetWriter.write, draw_module.SampleStream.__iter__

    def logged_write(self, batch):
        events.append(("write", len(batch)))
        return write(self, batch)

    def logged_draw(self):
        for batch in draw(self):
            events.append(("draw", len(batch)))
            yield batch

    monkeypatch.setattr(data.DatasetWriter, "write", logged_write)
    monkeypatch.setattr(draw_module.SampleStream, "__iter__", logged_draw)
    path, drawn, _ = runner.sample(trained.run, tmp_path / "s", n=10, steps=2, batch_size=4, progress=False)
    assert events == [("draw", 4), ("write", 4), ("draw", 4), ("write", 4), ("draw", 2), ("write", 2)]
    assert drawn.n == 10 and len(drawn.fields) == figures.N_SHOW  # only the plotted ones are kept
    assert data.read_info(path).n == 10


def test_sample_file_reads_and_checks_against_the_model_floor(trained, tmp_path):
    out = tmp_path / "samples"
    path, drawn, record = runner.sample(trained.run, out, n=5, steps=2, seed=7, batch_size=4, progress=False)
    info = data.read_info(path)
    assert (info.pde.name, info.n, info.resolution, info.seed) == ("poisson", 5, 16, 7)
    assert info.floor == record["data"]["floor"]  # the model's data floor, not the samples' own
    model, _, _ = loading.load_model(trained.run)
    in_memory = draw_module.generate_samples(model, record, 5, 2, 7, batch_size=4, progress=False).fields
    np.testing.assert_array_equal(data.read_fields(path), in_memory)  # streamed batch by batch
    np.testing.assert_array_equal(drawn.fields, in_memory[: figures.N_SHOW])
    assert drawn.n == 5 and drawn.nfe_per_sample == 3
    report = data.check_dataset(path)
    assert report.checked == 5 and report.floor == record["data"]["floor"]
    assert report.ratios()["interior"] > 10 and not report.ok  # a 4-step model is far from the data
    with h5py.File(path) as f:
        assert json.loads(f.attrs["sampling"])["network_calls_per_sample"] == 3
        own = json.loads(f.attrs["residual"])
    assert own["interior"]["median_mse"] == pytest.approx(report.residual["interior"]["median_mse"])
    assert (out / "samples.png").read_bytes()[:8] == PNG
    assert sorted(p.name for p in out.iterdir()) == ["samples.h5", "samples.png"]  # no temporaries
    with pytest.raises(OutputExistsError, match="--overwrite"):
        runner.sample(trained.run, out, n=5, steps=2, progress=False)


# -- the metric path -----------------------------------------------------------------------------------
def test_fidelity_of_the_data_itself_is_near_zero_and_the_model_is_not(trained):
    pde, floor = pdes.get("poisson"), trained.record["data"]["floor"]
    ref = data.read_fields(trained.ref)
    itself = runner.score_samples(pde, ref, ref, floor)
    assert itself["fidelity"]["fidelity_score"] == pytest.approx(0.0, abs=1e-9)
    assert 0.3 < itself["ratio_to_floor"]["interior"] < 3  # fresh solver data sit at the floor
    held_out = runner.score_samples(pde, data.read_fields(trained.data), ref, floor)
    assert held_out["fidelity"]["fidelity_score"] < 0.3  # 64 vs 32 samples: the finite-sample floor
    drawn = draw_module.generate_samples(trained.model, trained.record, 32, 4, 0, progress=False)
    model = runner.score_samples(pde, drawn.fields, ref, floor)
    assert model["fidelity"]["fidelity_score"] > 3 * held_out["fidelity"]["fidelity_score"]
    assert model["ratio_to_floor"]["interior"] > 10 * held_out["ratio_to_floor"]["interior"]

    broken = drawn.fields.copy()
    broken[1, 0, 3, 3] = np.nan
    scored = runner.score_samples(pde, broken, ref, floor)
    assert scored["nonfinite"] == 1 and np.isfinite(scored["fidelity"]["fidelity_score"])


def test_reference_is_cached_and_solved_again_when_broken(trained):
    pde = pdes.get("poisson")
    again = reference_module.held_out_reference(
        pde, 16, 10_000, N_REFERENCE, root=trained.cache, progress=False
    )
    assert again == trained.ref and again.parent == trained.cache / "reference"
    stamp = again.stat().st_mtime_ns
    same = reference_module.held_out_reference(
        pde, 16, 10_000, N_REFERENCE, root=trained.cache, progress=False
    )
    assert same.stat().st_mtime_ns == stamp  # reused, not solved again
    other = reference_module.reference_path(pde, 16, 10_001, N_REFERENCE, trained.cache)
    assert other != again
    other.write_bytes(b"truncated")
    solved = reference_module.held_out_reference(
        pde, 16, 10_001, N_REFERENCE, root=trained.cache, progress=False
    )
    assert solved == other and data.read_info(solved).n == N_REFERENCE
    path, note = reference_module.reference_for(
        trained.record, n_reference=N_REFERENCE, cache=trained.cache, progress=False
    )
    assert path == trained.ref and note["seed"] == 10_000  # training seed 0 + the held-out offset


# -- the evaluation ------------------------------------------------------------------------------------
def test_evaluate_writes_reports_with_floor_and_fidelity(trained, tmp_path):
    out = tmp_path / "eval"
    report = runner.evaluate(
        trained.run, n=8, steps=[2, 4], seed=0, n_reference=N_REFERENCE, cache=trained.cache,
        out=out, progress=False, batch_size=8,
    )  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.json", "report.md", "samples.png", "residuals.png", "spectra.png"]
    )
    assert json.loads((out / "report.json").read_text()) == report
    assert report["reference"]["path"] == str(trained.ref)  # the cached held-out set, seed 0 + 10000
    assert report["floor"] == trained.record["data"]["floor"]
    assert report["train"]["path"] == str(trained.data) and report["train"]["n"] == 64
    assert [run["steps"] for run in report["runs"]] == [2, 4]
    for run, calls in zip(report["runs"], (3, 7), strict=True):
        assert run["cost"]["network_calls_per_sample"] == calls and run["nonfinite"] == 0
        for region in ("all", "interior", "boundary"):
            for stat in ("mean_mse", "median_mse", "mean_mae"):
                assert np.isfinite(run["residual"][region][stat])
            assert np.isfinite(run["ratio_to_floor"][region])
        assert np.isfinite(run["fidelity"]["fidelity_score"])
        assert run["fidelity"]["memorization"]["ratio"] > 0
    md = (out / "report.md").read_text()
    for text in ("## 2 steps", "## 4 steps", "Residual vs the data floor", "fidelity score", "memorization"):
        assert text in md
    floor_median = trained.record["data"]["floor"]["interior"]["median_mse"]
    assert f"{floor_median:.3e}" in md
    for name in ("samples.png", "residuals.png", "spectra.png"):
        assert (out / name).read_bytes()[:8] == PNG
    with pytest.raises(OutputExistsError, match="--overwrite"):
        runner.evaluate(trained.run, n=2, steps=[1], out=out, cache=trained.cache, progress=False)


def test_memorization_is_skipped_without_the_training_file(trained, tmp_path):
    record_path = tmp_path / "model.json"
    (tmp_path / "model.safetensors").write_bytes((trained.run / "model.safetensors").read_bytes())
    record = json.loads((trained.run / "model.json").read_text())
    record["data"]["path"] = str(tmp_path / "gone.h5")
    record_path.write_text(json.dumps(record))
    report = runner.evaluate(
        tmp_path / "model", n=4, steps=[1], n_reference=N_REFERENCE, cache=trained.cache, progress=False
    )
    assert report["train"]["path"] is None and "skipped" in report["train"]["note"]
    assert "memorization" not in report["runs"][0]["fidelity"]
    report = runner.evaluate(
        tmp_path / "model", n=4, steps=[1], reference=trained.ref, train=trained.data, progress=False
    )
    assert report["train"]["path"] == str(trained.data) and "memorization" in report["runs"][0]["fidelity"]


@pytest.mark.parametrize(
    ("pde", "resolution", "option"),
    [("helmholtz", 16, "reference"), ("poisson", 24, "reference"), ("poisson", 24, "train")],
)
def test_reference_of_another_pde_or_resolution_is_refused(trained, tmp_path, pde, resolution, option):
    other = tmp_path / "other.h5"
    data.generate_dataset(pdes.get(pde), 2, other, resolution=resolution, progress=False)
    with pytest.raises(DataFileError, match=r"the model was trained on poisson .* at 16x16") as err:
        runner.evaluate(trained.run, n=2, steps=[1], progress=False, cache=trained.cache, **{option: other})
    assert f"{pde}" in err.value.problem and f"{resolution}x{resolution}" in err.value.problem
    assert f"--{option}" in err.value.fix


# -- the command line ----------------------------------------------------------------------------------
def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, " ".join(out.err.split())


def test_cli_sample_check_evaluate(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PIRF_CACHE", str(trained.cache))
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "s"
    argv = ["sample", str(trained.run), "--n", "4", "--steps", "2", "--seed", "1", "--out", str(out)]
    code, stdout, _ = run(argv, capsys)
    assert code == 0 and "wrote 4 samples" in stdout and "3 network calls per sample" in stdout
    code, stdout, _ = run(["data", "info", str(out / "samples.h5")], capsys)
    assert code == 0 and "pirf sample: heun 2 steps" in stdout
    code, stdout, err = run(["data", "check", str(out / "samples.h5")], capsys)
    assert code == 1 and "check failed" in err  # the untrained model sits far above the data floor
    code, _, err = run(argv, capsys)
    assert code == 2 and "--overwrite" in err
    code, _, _ = run([*argv, "--overwrite"], capsys)
    assert code == 0

    ev = tmp_path / "e"
    argv = ["evaluate", str(trained.run), "--n", "4", "--steps", "1", "--steps", "2", "--out", str(ev)]
    code, stdout, _ = run([*argv, "--n-reference", str(N_REFERENCE)], capsys)
    assert code == 0 and "fidelity" in stdout and (ev / "report.md").exists()
    assert [r["steps"] for r in json.loads((ev / "report.json").read_text())["runs"]] == [1, 2]
    code, _, err = run([*argv, "--n-reference", str(N_REFERENCE)], capsys)
    assert code == 2 and "--overwrite" in err

    for bad, message in [
        (["evaluate", "poison", "--out", str(tmp_path / "x")], "did you mean 'poisson'"),
        (["sample", str(trained.run), "--sampler", "hen", "--out", str(tmp_path / "x")], "unknown sampler"),
        (["sample", str(trained.run), "--n", "0", "--out", str(tmp_path / "x")], "positive integer"),
        (["sample", str(trained.run), "--device", "tpu0", "--out", str(tmp_path / "x")], "unknown device"),
    ]:
        code, _, err = run(bad, capsys)
        assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # nothing half-written
