"""The fidelity guard judged per channel (issue 24): one channel whose fine scales leave the data is
refused even where the composite score holds, the failure names the channel and the term, and the
fine-tune's selection and the bench's sweeps and table act on it."""

import json

import numpy as np
import pytest

import pirf.pdes as pdes
from pirf.bench.cells import choose, judged
from pirf.bench.table import headline, with_ratios
from pirf.evaluation import metrics as m
from pirf.evaluation.distances import diversity
from pirf.evaluation.guard import GuardTolerances, Score, judge, worst_channel
from pirf.finetune import context as context_module
from pirf.finetune import finetune
from pirf.finetune.config import EvalConfig, FinetuneConfig, RegularizationConfig, SamplerConfig

NOISE = 0.07  # white noise on f, in f's std: fine-scale power up, the composite within 20%


def scored(pde, samples, reference):
    report = m.fidelity_report(pde, samples, reference)
    return {"fidelity": report["fidelity_score"], "channels": m.channel_terms(report, pde.fields)}


def distort_fine_scales(x: np.ndarray, channel: int, amplitude: float, seed: int = 0) -> np.ndarray:
    """``x`` with white noise of ``amplitude`` x the channel's std added to one channel."""
    out = x.copy()
    noise = np.random.default_rng(seed).standard_normal(out[:, channel].shape)
    out[:, channel] += amplitude * x[:, channel].std() * noise
    return out


@pytest.fixture(scope="module")
def poisson_sets():
    """Held-out Poisson data, and a "base model": other solver samples with u at 0.6x (an
    imperfect base, composite score ~0.19), so there is room within the composite's 20%."""
    pde = pdes.get("poisson")
    reference = pde.generate(64, 32, seed=0)
    base = pde.generate(64, 32, seed=1)
    base[:, 1] *= 0.6
    return pde, reference, base


def test_per_channel_terms_are_reported_and_average_to_the_composite_terms(poisson_sets):
    pde, reference, base = poisson_sets
    report = m.fidelity_report(pde, base, reference)
    terms = m.channel_terms(report)
    assert set(terms) == {"f", "u"} and all(set(t) == set(m.CHANNEL_TERMS) for t in terms.values())
    assert np.mean([terms[c]["spectrum"] for c in terms]) == pytest.approx(report["score_terms"]["spectrum"])
    moments = np.mean([(t["mean"] + t["std"] + t["amplitude"]) / 3 for t in terms.values()])
    assert moments == pytest.approx(report["score_terms"]["moments"])
    assert terms["u"]["std"] == pytest.approx(0.4, abs=0.1)  # u was shrunk to 0.6x
    assert set(report["diversity"]["channel_ratio"]) == {"f", "u"}


def test_a_collapsed_channel_shows_in_its_own_diversity_ratio(poisson_sets):
    pde, reference, base = poisson_sets
    collapsed = base.copy()
    collapsed[:, 1] = base[:1, 1]  # every sample's u is the first one's
    div = diversity(collapsed, reference, pde=pde)
    assert div["channel_ratio"]["u"] == 0.0 and div["channel_ratio"]["f"] > 0.5
    assert m.channel_terms(m.fidelity_report(pde, collapsed, reference))["u"]["diversity"] == 1.0


def test_a_channel_with_distorted_fine_scales_is_refused_though_the_score_holds(poisson_sets):
    pde, reference, base = poisson_sets
    b = scored(pde, base, reference)
    bad = scored(pde, distort_fine_scales(base, 0, NOISE), reference)
    assert bad["fidelity"] <= 1.2 * b["fidelity"], "the composite alone would admit it"
    assert judge(bad, b, GuardTolerances(channel=1e9)).ok  # the old guard: the score only
    verdict = judge(bad, b)
    assert not verdict.ok and verdict.failed == (("f", "spectrum"),), verdict
    assert "channel f" in verdict.failures[0] and "spectrum" in verdict.failures[0]
    worst = worst_channel(bad, b)
    assert (worst.channel, worst.term) == ("f", "spectrum") and worst.ratio > 5 and worst.load > 1
    assert verdict.to_dict() == {"admissible": False, "failures": list(verdict.failures), "per_channel": True}


def test_the_base_itself_and_small_changes_pass(poisson_sets):
    pde, reference, base = poisson_sets
    b = scored(pde, base, reference)
    assert judge(b, b).ok and judge(b, b).per_channel
    slightly = base.copy()
    slightly[:, 0] *= 0.97
    assert judge(scored(pde, slightly, reference), b).ok


def test_an_inflated_channel_fails_on_its_moments(poisson_sets):
    pde, reference, base = poisson_sets
    b = scored(pde, base, reference)
    inflated = base.copy()
    inflated[:, 0] *= 1.1
    cand = scored(pde, inflated, reference)
    verdict = judge(cand, b)
    assert cand["fidelity"] <= 1.05 * b["fidelity"]
    assert not verdict.ok and set(verdict.failed) == {("f", "std"), ("f", "amplitude")}, verdict


def test_tolerances_limits_and_old_results():
    tol = GuardTolerances()
    assert tol.limit("spectrum", 0.057) == pytest.approx(0.157)  # the margin: 0.1 dex
    assert tol.limit("spectrum", 1.0) == pytest.approx(1.2)  # the factor: 1.2x
    assert tol.limit("amplitude", 0.0) == pytest.approx(0.05)
    base = {"fidelity": 1.0, "channels": {"f": {"spectrum": 0.057, "std": 0.1, "amplitude": 0.1}}}
    hacked = {"fidelity": 1.0, "channels": {"f": {"spectrum": 0.938, "std": 0.1, "amplitude": 0.1}}}
    assert judge(hacked, base).failed == (("f", "spectrum"),)
    # a result without per-channel terms (an older record) is judged on the score alone
    assert judge({"fidelity": 1.1}, base).ok and not judge({"fidelity": 1.1}, base).per_channel
    assert judge({"fidelity": 1.3}, base).failed == (("all", "score"),)
    assert not judge({"fidelity": None}, base).ok and not judge({"fidelity": 1.0, "finite": False}, base).ok
    assert not judge({"fidelity": 1.0, "diverged": True}, base).ok
    assert GuardTolerances.of(RegularizationConfig(channel_spectrum_margin=0.2)).spectrum_margin == 0.2
    assert GuardTolerances.of({"fidelity_tolerance": 0.5}) == GuardTolerances(fidelity=0.5)


def test_a_typed_score_is_the_guard_on_the_recorded_mappings():
    """`Score.judge` on every kind of result the records hold (old ones without channel terms,
    non-finite, diverged, NaN terms) against every kind of base; the functions on mappings give
    the same verdicts, and the mapping round-trips (the recorded results stay mappings)."""
    terms = {"spectrum": 0.057, "std": 0.1, "amplitude": 0.1}
    base = {"fidelity": 1.0, "residual": 3.0, "channels": {"f": terms}}
    results = [
        {"fidelity": 1.1},
        {"fidelity": 1.3, "channels": {"f": terms}},
        {"fidelity": 1.0, "channels": {"f": terms | {"spectrum": 0.938}}},
        {"fidelity": 1.0, "channels": {"f": terms | {"std": float("nan")}}},
        {"fidelity": None},
        {"fidelity": float("nan")},
        {"fidelity": 1.0, "finite": False},
        {"fidelity": 1.0, "diverged": True},
    ]
    score, spectrum, std, finite, no_base = (
        ("all", "score"),
        ("f", "spectrum"),
        ("f", "std"),
        ("all", "finite"),
        ("all", "base"),
    )
    expected = {  # the failed (channel, term) of each result, per base
        "base": [(), (score,), (spectrum,), (std,), (finite,), (finite,), (finite,), (finite,)],
        "non-finite base": [(), (), (), (), (finite,), (finite,), (finite,), (finite,)],
        "base without a score": [(no_base,)] * 4 + [(finite,)] * 4,
        "better base": [(score,), (score,), (), (), (finite,), (finite,), (finite,), (finite,)],
    }
    bases = {
        "base": base,
        "non-finite base": {"fidelity": float("inf"), "finite": False},
        "base without a score": {"fidelity": None},
        "better base": {"fidelity": 0.9},
    }
    tolerances = GuardTolerances(channel=0.5)
    for name, b in bases.items():
        for r, failed in zip(results, expected[name], strict=True):
            verdict = Score.from_mapping(r).judge(Score.from_mapping(b), tolerances)
            assert verdict.failed == failed and verdict.ok == (not failed), (name, r, verdict)
            assert judge(r, b, tolerances) == verdict
            assert Score.from_mapping(Score.from_mapping(r).to_dict()) == Score.from_mapping(r)
    worst = Score.from_mapping(results[2]).worst_channel(base)
    assert (worst.channel, worst.term) == ("f", "spectrum") and worst == worst_channel(results[2], base)
    assert Score.from_mapping(base).to_dict() == {
        "fidelity": 1.0,
        "finite": True,
        "diverged": False,
        "channels": {"f": terms},
    }
    with pytest.raises(AttributeError):
        Score(1.0).fidelity = 2.0  # frozen


def test_bench_sweep_and_table_refuse_a_channel_the_score_hides():
    channels = {
        "f": {"spectrum": 0.05, "std": 0.05, "amplitude": 0.05},
        "u": {**dict.fromkeys(("spectrum", "std", "amplitude"), 0.3)},
    }
    hacked = {**channels, "f": {**channels["f"], "spectrum": 0.9}}
    base = {"fidelity": 1.0, "channels": channels}
    trials = [
        {"setting": {"zeta": 1}, "residual": {"all": 0.5}, "fidelity": 1.0, "channels": channels},
        {"setting": {"zeta": 2}, "residual": {"all": 0.1}, "fidelity": 1.0, "channels": hacked},
    ]
    assert choose(trials, base, 0.2) == {"zeta": 1, "admissible": True}
    records = judged(trials, base, GuardTolerances())
    assert records[0]["guard"]["admissible"] and "channel f: spectrum" in records[1]["guard"]["failures"][0]
    cell = {"benchmark": "poisson", "steps": 20, "residual": {"all": 0.1}}
    cells = with_ratios(
        [
            cell | {"method": "base", "fidelity": 1.0, "channels": channels},
            cell | {"method": "pirf", "fidelity": 1.0, "channels": hacked},
            cell | {"method": "dps", "fidelity": 1.0},  # a cell from before per-channel terms
        ]
    )
    by = {c["method"]: c for c in cells}
    assert by["pirf"]["fidelity_over_base"] == pytest.approx(1.0) and not by["pirf"]["guard"]["admissible"]
    assert by["pirf"]["worst_channel"]["channel"] == "f" and by["pirf"]["worst_channel"]["term"] == "spectrum"
    assert by["dps"]["guard"]["admissible"] and by["dps"]["worst_channel"] is None
    table = headline(cells)
    assert "| pirf | 0.1 ✗ |" in table and "| dps | 0.1 |" in table
    json.dumps(cells)  # the table's JSON stays plain


def _tiny_config(base_model, out, **regularization) -> FinetuneConfig:
    reg = RegularizationConfig(ema_halflife_samples=8.0, alphas=(0.5,), **regularization)
    return FinetuneConfig(
        base=str(base_model),
        out=str(out),
        iterations=4,
        batch_size=4,
        sampler=SamplerConfig(steps=10),
        lr=1e-4,
        warmup_iterations=1,
        eval=EvalConfig(every=2, n=8, n_reference=16),
        regularization=reg,
        log_every=1,
        checkpoint_every=4,
    )


def test_a_finetune_that_distorts_one_channel_falls_back_to_the_base(
    tiny_poisson_model, tmp_path, monkeypatch
):
    """Every fine-tuned candidate's f is scored with white fine-scale noise added (the scoring is
    patched: the first set scored is the base model's, and the residual is left as drawn, so only
    fidelity can refuse); the composite guard is opened wide (10x), so only the per-channel guard
    stands between the distortion and model.safetensors."""
    scored_sets = []
    original = context_module.score_samples

    def distorted(pde, samples, reference, floor):
        result = original(pde, samples, reference, floor)
        scored_sets.append(1)
        if len(scored_sets) > 1:
            noisy = distort_fine_scales(samples, 0, 2.0, seed=len(scored_sets))
            result["fidelity"] = original(pde, noisy, reference, floor)["fidelity"]
        return result

    monkeypatch.setattr(context_module, "score_samples", distorted)
    run = tmp_path / "run"
    result = finetune(_tiny_config(tiny_poisson_model, run, fidelity_tolerance=10.0), progress=False)
    chosen = result.selected["chosen"]
    assert (chosen["weights"], chosen["alpha"]) == ("base", 0.0), result.selected
    refused = [c for c in result.selected["candidates"] if c["weights"] != "base"]
    assert len(refused) == 2 and all(not c["admissible"] for c in refused)  # final EMA, alpha 0.5
    assert all(any("channel f" in f and "spectrum" in f for f in c["failures"]) for c in refused)
    assert all(c["worst_channel"].startswith("f ") for c in refused)
    assert all(c["fidelity"] <= 11 * result.selected["base"]["fidelity"] for c in refused)
    stored = json.loads((run / "selection.json").read_text())
    assert stored["chosen"] == chosen and stored["guard"]["channel_tolerance"] == 0.2
    evals = [json.loads(ln) for ln in (run / "evals.jsonl").read_text().splitlines()]
    ema = [e for e in evals if e["weights"] == "ema"]
    assert ema and all(not e["guard"]["admissible"] and not e["best"] for e in ema)
    assert all(e["guard"]["failures"] for e in ema)

    # the same distorted run with the per-channel guard off admits every candidate
    scored_sets.clear()
    cfg = _tiny_config(tiny_poisson_model, tmp_path / "open", fidelity_tolerance=10.0, channel_tolerance=1e9)
    assert all(c["admissible"] for c in finetune(cfg, progress=False).selected["candidates"])
