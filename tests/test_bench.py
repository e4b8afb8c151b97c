"""`pirf bench` on a tiny model: every row kind, the table files, the sweeps' choice, resume that
recomputes nothing finished, and clear errors on unknown names and changed settings."""

import json

import pytest

from pirf.bench import resolve_bench_config, run_bench
from pirf.bench.cells import choose
from pirf.bench.config import ABLATIONS, FAMILY, MAIN_ROWS, ROWS
from pirf.bench.models import pgdiffusion_config, pidm_config
from pirf.cli import main
from pirf.errors import ConfigError, NonFiniteError, OutputExistsError, UnknownNameError

FINETUNE = """
iterations: 4
batch_size: 4
sampler: {steps: 4}
lr: 1.0e-3
warmup_iterations: 1
eval: {every: 2, n: 4, n_reference: 16}
regularization: {ema_halflife_samples: 8.0, alphas: [0.5]}
log_every: 1
checkpoint_every: 2
"""


def _config(model, tmp_path, methods, **extra):
    (tmp_path / "ft.yaml").write_text(FINETUNE)
    overrides = [
        f"base={model}",
        f"finetune_config={tmp_path / 'ft.yaml'}",
        f"out={tmp_path / 'bench'}",
        "n=6",
        "sweep_n=4",
        "steps=[4]",
        "transfer_steps=[6]",
        "n_reference=16",
        "dps.zetas=[0.0, 1.0e-3, 1.0e9]",
        "cocogen.corrections=[1, 2]",
        "cocogen.zetas=[1.0e-4, 1.0e9]",
        "pidm.steps=3",
        "pidm.batch_size=4",
        "pgdiffusion.steps=3",
        "pgdiffusion.batch_size=4",
        *[f"{k}={v}" for k, v in extra.items()],
    ]
    return resolve_bench_config("cpu", None, overrides, benchmarks=["poisson"], methods=methods)


def test_bench_fills_every_row_writes_its_table_and_resumes(tiny_poisson_model, tmp_path):
    methods = ["data", "base", "dps", "cocogen", "pidm", "pirf", "pirf-noreg"]
    cfg = _config(tiny_poisson_model, tmp_path, methods)
    table = run_bench(cfg, progress=False)
    out = tmp_path / "bench"
    cells = {(c["method"], c["steps"]): c for c in table["cells"]}
    assert set(cells) == {(m, 4) for m in methods} | {("base", 6), ("pirf", 6)}
    for (method, _), cell in cells.items():
        assert cell["n"] == 6 and cell["residual"]["all"] > 0 and cell["fidelity"] is not None, method
        assert cell["cost"]["gradients"] == (method in ("dps", "cocogen"))
    assert cells[("base", 4)]["x_below_base"] == pytest.approx(1.0)
    # the sweep tried every setting; zeta = 1e9 diverges or wrecks fidelity and is never chosen
    sweep = json.loads((out / "sweeps" / "poisson" / "dps@4.json").read_text())
    assert [t["setting"]["zeta"] for t in sweep["trials"]] == [0.0, 1e-3, 1e9]
    assert cells[("dps", 4)]["setting"]["zeta"] in (0.0, 1e-3)
    assert cells[("cocogen", 4)]["setting"]["zeta_c"] == 1e-4
    for name in (
        "table.md",
        "table.csv",
        "table.json",
        "figures/samples_poisson.png",
        "figures/steps_poisson.png",
    ):
        assert (out / name).exists(), name
    assert "| pirf-noreg | 4 |" in (out / "table.md").read_text()
    assert len((out / "table.csv").read_text().splitlines()) == 1 + len(cells)

    # a second bench in the same folder must be asked for
    with pytest.raises(OutputExistsError, match="--resume"):
        run_bench(cfg, progress=False)
    # resume recomputes nothing finished: remove one cell, only it comes back, identical
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")}
    removed = out / "cells" / "poisson" / "pirf@4.json"
    before = json.loads(removed.read_text())
    removed.unlink()
    run_bench(cfg, resume=True, progress=False)
    after = json.loads(removed.read_text())
    assert after["residual"] == before["residual"] and after["fidelity"] == before["fidelity"]
    for path, stamp in stamps.items():
        if path != removed:
            assert path.stat().st_mtime_ns == stamp, path
    # a bench started before a setting existed resumes when the setting holds its default
    stored = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({k: v for k, v in stored.items() if k != "family_steps"}))
    run_bench(cfg, resume=True, progress=False)
    # so does a finished fine-tune whose config predates a section (it is reused, not retrained)
    run = out / "models" / "poisson" / "pirf"
    held = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({k: v for k, v in held.items() if k != "policy"}))
    trained = (run / "model.safetensors").stat().st_mtime_ns
    (out / "cells" / "poisson" / "pirf@6.json").unlink()
    run_bench(cfg, resume=True, progress=False)
    assert (run / "model.safetensors").stat().st_mtime_ns == trained
    assert (out / "cells" / "poisson" / "pirf@6.json").exists()
    # other settings cannot resume into these cells
    with pytest.raises(ConfigError, match="n differ"):
        run_bench(_config(tiny_poisson_model, tmp_path, methods, n=7), resume=True, progress=False)


def test_sweep_choice_keeps_fidelity_and_flags_when_nothing_does():
    base = {"fidelity": 1.0}
    trials = [
        {"setting": {"zeta": 1}, "residual": {"all": 0.5}, "fidelity": 1.1},
        {"setting": {"zeta": 2}, "residual": {"all": 0.1}, "fidelity": 1.5},  # better, but unfaithful
        {"setting": {"zeta": 3}, "diverged": True, "residual": {}, "fidelity": None},
    ]
    assert choose(trials, base, 0.2) == {"zeta": 1, "admissible": True}
    assert choose(trials, base, 0.01) == {"zeta": 2, "admissible": False}
    with pytest.raises(NonFiniteError, match="smaller step sizes"):
        choose(trials[2:], base, 0.2)


def test_bench_config_names_rows_and_checks_them():
    cfg = resolve_bench_config("cpu")
    assert cfg.methods == MAIN_ROWS and set(ABLATIONS) <= set(MAIN_ROWS)
    assert set(FAMILY) <= set(ROWS) and not set(FAMILY) & set(cfg.methods)  # the family runs on request
    assert resolve_bench_config("cpu", methods=["rsm"]).methods == ("rsm",)
    assert cfg.steps_for("pirf") == (20, 40, 80) and cfg.steps_for("dps") == (20, 80)
    assert resolve_bench_config("gpu").base.startswith("pretrain:")
    with pytest.raises(UnknownNameError, match="did you mean 'cocogen'"):
        resolve_bench_config("cpu", methods=["cocogen2"])
    with pytest.raises(UnknownNameError, match="benchmark"):
        resolve_bench_config("cpu", benchmarks=["darcyy"])


def test_pidm_continues_the_base_model_on_its_own_data(tiny_poisson_model, tmp_path):
    from pirf.models.loading import load_model

    cfg = _config(tiny_poisson_model, tmp_path, ["pidm"], **{"pidm.weight": 0.25})
    record = load_model(tiny_poisson_model)[1]
    pre = pidm_config(cfg, "poisson", str(tiny_poisson_model), record)
    assert pre.init == str(tiny_poisson_model) and pre.physics_weight == 0.25
    assert pre.data.path == record["config"]["data"]["path"]


def test_pgdiffusion_row_trains_on_the_base_and_samples_with_its_guided_euler_chain(
    tiny_poisson_model, tmp_path
):
    from pirf.models.loading import load_model

    cfg = _config(
        tiny_poisson_model, tmp_path, ["base", "pgdiffusion"], **{"pgdiffusion.guide_dropout": 0.25}
    )
    record = load_model(tiny_poisson_model)[1]
    pre = pgdiffusion_config(cfg, "poisson", str(tiny_poisson_model), record)
    assert pre.init == str(tiny_poisson_model) and pre.physics_guide and pre.guide_dropout == 0.25
    assert pre.data.path == record["config"]["data"]["path"] and pre.steps == 3 and pre.physics_weight == 0
    table = run_bench(cfg, progress=False)
    cells = {(c["method"], c["steps"]): c for c in table["cells"]}
    assert set(cells) == {("base", 4), ("base", 6), ("pgdiffusion", 4)}
    cost = cells[("pgdiffusion", 4)]["cost"]  # Euler: N calls; ceil(0.3 N) = 2 steps unguided
    assert cost["network_calls_per_sample"] == 4 and cost["residual_gradients_per_sample"] == 2
    assert cost["gradients"] is True and cells[("pgdiffusion", 4)]["residual"]["all"] > 0
    assert "| pgdiffusion | 4 |" in (tmp_path / "bench" / "table.md").read_text()
    assert "4 + 2 ∇R" in (tmp_path / "bench" / "table.md").read_text()
    trained = load_model(tmp_path / "bench" / "models" / "poisson" / "pgdiffusion")[1]
    assert trained["model"]["unet"]["guide_channels"] > 0 and trained["config"]["init"] == str(
        tiny_poisson_model
    )


def test_bench_cli_reports_unknown_methods(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--methods", "base,pirff"])
    assert exit_info.value.code == 2
    assert "did you mean 'pirf'" in capsys.readouterr().err


def test_a_pretrain_base_is_trained_once_then_reused(tiny_poisson_model, tmp_path):
    """The GPU scale's bases ("pretrain:<config>") are trained by the bench itself."""
    from pirf.bench.models import base_spec
    from pirf.models.loading import load_model

    data_path = load_model(tiny_poisson_model)[1]["config"]["data"]["path"]
    (tmp_path / "pre.yaml").write_text(
        f"data: {{path: {data_path}}}\n"
        "model: {base_channels: 8, channel_mult: [1, 2], mid_attention: false}\n"
        "steps: 4\nbatch_size: 4\nwarmup_steps: 1\nlog_every: 2\ncheckpoint_every: 2\n"
    )
    cfg = _config(tiny_poisson_model, tmp_path, ["base"], base=f"pretrain:{tmp_path / 'pre.yaml'}")
    spec = base_spec(cfg, "poisson", progress=False)
    assert spec == str(tmp_path / "bench" / "models" / "poisson" / "base" / "model.safetensors")
    stamp = (tmp_path / "bench" / "models" / "poisson" / "base" / "model.safetensors").stat().st_mtime_ns
    assert base_spec(cfg, "poisson", progress=False) == spec
    assert (
        tmp_path / "bench" / "models" / "poisson" / "base" / "model.safetensors"
    ).stat().st_mtime_ns == stamp
    (tmp_path / "pre.yaml").write_text((tmp_path / "pre.yaml").read_text().replace("steps: 4", "steps: 5"))
    with pytest.raises(ConfigError, match="another config"):
        base_spec(cfg, "poisson", progress=False)


def test_family_bench_runs_every_method_at_one_budget_and_plots_the_curves(tiny_poisson_model, tmp_path):
    """`--family rsm`: the family's rows fine-tune with the same config but the method, the
    black-box rows really run on a black box, and residual-vs-cost curves are drawn."""
    from pirf.bench.config import FAMILIES, FAMILY
    from pirf.bench.figures import family_curves

    rows = ["base", "pirf", "ddpo", "rsm", "adjoint-matching", "rwr-bb"]
    (tmp_path / "ft.yaml").write_text(FINETUNE)
    cfg = resolve_bench_config(
        "cpu",
        None,
        [
            f"base={tiny_poisson_model}",
            f"finetune_config={tmp_path / 'ft.yaml'}",
            f"out={tmp_path / 'bench'}",
            "n=6",
            "family_steps=[4]",
            "steps=[4]",
            "transfer_steps=[]",
            "n_reference=16",
        ],
        benchmarks=["poisson"],
        family="rsm",
        methods=rows,
    )
    assert cfg.methods == tuple(r for r in FAMILIES["rsm"] if r in rows)
    table = run_bench(cfg, progress=False)
    cells = {c["method"]: c for c in table["cells"]}
    assert set(cells) == set(rows) and all(c["steps"] == 4 for c in cells.values())
    models = tmp_path / "bench" / "models" / "poisson"
    for row in ("ddpo", "rsm", "adjoint-matching", "rwr-bb"):
        config = json.loads((models / row / "config.json").read_text())
        assert config["method"] == FAMILY[row][0] and config["iterations"] == 4
    assert json.loads((models / "rwr-bb" / "config.json").read_text())["reward"]["black_box"] is True
    curves = family_curves(tmp_path / "bench", "poisson")
    assert set(curves) == {"pirf", "ddpo", "rsm", "adjoint-matching", "rwr-bb"}
    assert all(c[-1]["trajectories"] == 16 and c[-1]["seconds"] > 0 for c in curves.values())
    # a row timed alone (benchmarks/family_cost.py) is placed at iteration x its cost
    timing = {"threads": 1, "iterations": 3, "seconds_per_iteration": {"ddpo": 2.5}}
    (tmp_path / "bench" / "family_cost_poisson.json").write_text(json.dumps(timing))
    timed = family_curves(tmp_path / "bench", "poisson")
    assert [p["seconds"] for p in timed["ddpo"]] == [2.5 * p["trajectories"] / 4 for p in timed["ddpo"]]
    assert timed["pirf"] == curves["pirf"]
    assert (tmp_path / "bench" / "figures" / "family_poisson.png").exists()
    with pytest.raises(UnknownNameError, match="family"):
        resolve_bench_config("cpu", None, [], family="rl")
    with pytest.raises(UnknownNameError, match="'dps'"):
        resolve_bench_config("cpu", None, [], family="rsm", methods=["dps"])
