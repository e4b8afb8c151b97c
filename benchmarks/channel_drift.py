"""What the anchor on the fixed channels holds, wavenumber by wavenumber (issue 24).

    python benchmarks/channel_drift.py helmholtz runs/demo/finetune          # base, fine-tuned
    python benchmarks/channel_drift.py poisson runs/acceptance/poisson/finetune --n 128 --json out.json

Draws ``n`` samples of the base model and of the fine-tuned one from the same seeds (sample i
from the noise of (seed, i), `generate_samples`), and the held-out reference set of the base's
data, and reports per channel, on the radially averaged power spectrum (`power_spectrum`, shells
|k| = 1 .. K-1 in cycles per domain):

- ``tuned / base``: P_tuned(k) / P_base(k), how the fine-tune moved each scale's power;
- ``base / data`` and ``tuned / data``: each model's power against the held-out data's;
- ``drift``: P(x_tuned - x_base)(k) / P_base(k), the power of the same-seed difference relative to
  the base's at that scale: 0 = the same field there, 1 = a change as large as the field itself.
  Power ratios can stay near 1 while the fine scales are redrawn; the drift cannot;
- what the anchor sees of that drift. The anchor (`fixed_channel_drift`) compares the fine-tuned
  model's x0 with the base model's x0 *from the same state entering the gradient window* (the
  last K steps), a state the fine-tuned model made. A third set, ``handoff`` (the fine-tuned model
  for the first N - K steps, the base model for the last K), splits the drift in two:
  ``seen`` = P(x_tuned - x_handoff)(k) / P_base(k), made inside the window, which the anchor
  penalizes, and ``before`` = P(x_handoff - x_base)(k) / P_base(k), made by the fine-tuned weights
  at the noise levels before the window, which the anchor never sees. K and N default to the
  fine-tune's own (``truncation.k``, ``sampler.steps`` in its record).

A channel the reward cannot see (Darcy's a, a Poisson or Helmholtz source f: `fixed_channels`)
is marked ``fixed``: the anchor (`regularization.anchor_fixed_channels`) is meant to hold it, and
its ``drift`` and ``tuned / base`` columns at high k say whether it does. The spectrum error in
dex (`spectrum_error`) of both models closes each channel's table. Shells are printed at
k = 1, 2, 3, 4, 6, 8, 12, 16, ... and the top shell; ``--json`` writes every shell.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pirf.data import read_fields
from pirf.errors import ConfigError
from pirf.evaluation.distances import power_spectrum, spectrum_error
from pirf.evaluation.markdown import markdown_table
from pirf.evaluation.reference import reference_for
from pirf.finetune.context import fixed_channels
from pirf.models.loading import load_model
from pirf.models.record import record_pde
from pirf.rewards import RewardConfig, make_reward
from pirf.sampling import SampleOutput, sample_heun
from pirf.sampling.draw import generate_samples


def shells_to_show(k_max: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, ... below ``k_max``, and ``k_max`` itself."""
    out, k = [1, 2, 3], 4
    while k < k_max:
        out += [k, k + k // 2]
        k *= 2
    return sorted({s for s in out if s < k_max} | {k_max})


def handoff_chain(base_model: torch.nn.Module, k: int) -> Callable[..., SampleOutput]:
    """A sampling chain (`generate_samples`' ``chain``): the given (fine-tuned) model for the first
    N - k Heun steps, then ``base_model`` for the last k from that state, as the anchor's
    reference does (`fixed_channel_drift`)."""

    def chain(model: torch.nn.Module, noise: Tensor, sigmas: Tensor) -> SampleOutput:
        n = sigmas.shape[0] - 1
        head = sample_heun(model, noise, sigmas[: n - k + 1])  # ends at sigma_{N-k} > 0
        tail = sample_heun(base_model, head.x0 / sigmas[n - k], sigmas[n - k :])  # starts at sigmas[0] x
        return SampleOutput(tail.x0, head.nfe + tail.nfe)

    return chain


def drift_report(sets: dict[str, np.ndarray], names: list[str], fixed: list[bool]) -> dict[str, Any]:
    """Per channel, from ``sets`` (``base``, ``tuned``, ``handoff``, ``data``: physical fields,
    the first three on the same seeds): every shell's power of base, tuned and data, the ratios,
    the same-seed drift and its split into ``seen`` and ``before`` (module docstring)."""

    def spectrum(x: np.ndarray) -> np.ndarray:
        return power_spectrum(x)[:, 1:]

    base, tuned, handoff, data = (sets[k] for k in ("base", "tuned", "handoff", "data"))
    p = {"base": spectrum(base), "tuned": spectrum(tuned), "data": spectrum(data)}
    diff = {"drift": tuned - base, "seen": tuned - handoff, "before": handoff - base}
    p_diff = {key: spectrum(x) for key, x in diff.items()}
    errors = {"base": spectrum_error(base, data), "tuned": spectrum_error(tuned, data)}

    def ratio(a: np.ndarray, b: np.ndarray) -> list[float]:
        return (a / np.maximum(b, 1e-300)).tolist()

    out = {}
    for c, name in enumerate(names):
        out[name] = {
            "fixed": fixed[c],
            "k": list(range(1, p["base"].shape[1] + 1)),
            "power": {key: v[c].tolist() for key, v in p.items()},
            "tuned_over_base": ratio(p["tuned"][c], p["base"][c]),
            "base_over_data": ratio(p["base"][c], p["data"][c]),
            "tuned_over_data": ratio(p["tuned"][c], p["data"][c]),
            **{key: ratio(v[c], p["base"][c]) for key, v in p_diff.items()},
            "spectrum_error": {key: e[f"c{c}"] for key, e in errors.items()},
        }
    return out


COLUMNS = ("base_over_data", "tuned_over_data", "tuned_over_base", "drift", "seen", "before")


def markdown(report: dict[str, Any]) -> str:
    """One table per channel at the shells of `shells_to_show`."""
    parts = []
    for name, ch in report["channels"].items():
        rows = [
            [str(k), f"{ch['power']['data'][k - 1]:.3g}", *(f"{ch[col][k - 1]:.3g}" for col in COLUMNS)]
            for k in shells_to_show(len(ch["k"]))
        ]
        err = ch["spectrum_error"]
        headers = ["k", "P data", "base / data", "tuned / data", "tuned / base", "drift", "seen", "before"]
        parts += [
            f"### {name}{' (fixed: the reward does not see it)' if ch['fixed'] else ''}",
            "",
            markdown_table(headers, rows),
            "",
            f"spectrum error (dex, shells 1..{len(ch['k'])}): "
            f"base {err['base']:.3g}, tuned {err['tuned']:.3g}",
            "",
        ]
    head = (
        f"Base `{report['base']}` vs fine-tuned `{report['tuned']}`: {report['n']} samples each from seeds "
        f"({report['seed']}, i), {report['steps']} Heun steps; data: {report['n_reference']} held-out "
        "solver samples. drift = P(tuned - base)(k) / P(base)(k) on the same seeds; seen: the part made "
        f"in the last {report['window']} steps (what the anchor penalizes); before: the part the "
        "fine-tuned weights made at the earlier steps (what the anchor cannot see)."
    )
    return "\n".join([head, "", *parts])


def measure(
    base: str,
    tuned: str,
    n: int = 64,
    steps: int | None = None,
    seed: int = 0,
    n_reference: int = 256,
    window: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample base, fine-tuned and handoff on the same seeds and compare their spectra per
    channel (module docstring); ``steps`` and ``window`` default to the fine-tune's."""
    base_model, record, _ = load_model(base)
    tuned_model, tuned_record, _ = load_model(tuned)
    if (tuned_record["pde"], tuned_record["resolution"]) != (record["pde"], record["resolution"]):
        raise ConfigError(
            f"{tuned} is a {tuned_record['pde']} model at {tuned_record['resolution']}, "
            f"{base} a {record['pde']} model at {record['resolution']}",
            "compare a fine-tuned model with its own base",
        )
    trained = tuned_record.get("config") or {}
    steps = steps or int(trained.get("sampler", {}).get("steps", 20))
    window = window or int(trained.get("truncation", {}).get("k", 2))
    if not 1 <= window < steps:
        raise ConfigError(f"window {window} for a {steps}-step chain", f"use 1 <= --window < {steps}")
    pde = record_pde(record)

    def draw(model: torch.nn.Module, rec: dict[str, Any], **kw: Any) -> np.ndarray:
        return generate_samples(model, rec, n, steps, seed, progress=progress, **kw).fields.astype(np.float64)

    sets = {
        "base": draw(base_model, record),
        "tuned": draw(tuned_model, tuned_record),
        "handoff": draw(tuned_model, tuned_record, chain=handoff_chain(base_model, window)),
        "data": read_fields(reference_for(record, None, n_reference, progress=progress)[0]),
    }
    fixed = fixed_channels(make_reward(pde, RewardConfig()), pde).tolist()
    return {
        "base": str(base),
        "tuned": str(tuned),
        "n": n,
        "steps": steps,
        "window": window,
        "seed": seed,
        "n_reference": n_reference,
        "channels": drift_report(sets, list(pde.fields), fixed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the base model: a zoo name, a run folder or a model file")
    parser.add_argument("tuned", help="the fine-tuned model (a run folder such as runs/demo/finetune)")
    parser.add_argument("--n", type=int, default=64, help="samples per model (default 64)")
    parser.add_argument("--steps", type=int, help="Heun steps (default: the fine-tune's)")
    parser.add_argument("--window", type=int, help="the gradient window K (default: the fine-tune's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-reference", type=int, default=256)
    parser.add_argument("--json", type=Path, help="also write every shell here")
    args = parser.parse_args()
    report = measure(args.base, args.tuned, args.n, args.steps, args.seed, args.n_reference, args.window)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(markdown(report))


if __name__ == "__main__":
    main()
