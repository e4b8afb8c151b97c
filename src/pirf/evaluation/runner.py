"""Sampling a trained model and evaluating its samples: what ``pirf sample`` and ``pirf evaluate`` run.

- `resolve_model` turns a command-line SPEC (a benchmark name, a run folder, a checkpoint file)
  into a checkpoint path.
- `generate_samples` draws ``n`` samples in physical units with per-sample seeds: sample i
  starts from noise drawn by a generator seeded with ``SeedSequence([seed, i])``, so it depends
  only on (seed, i) -- ``n = 10`` is a prefix of ``n = 100``, whatever the batch size.
- `score_samples` is the metric path on arrays: residual statistics per region next to the data
  floor (ratio = samples' median MSE / floor's median MSE), and `fidelity_report` against a
  held-out reference set (and memorization against the training set when given).
- `evaluate` puts them together for a checkpoint at one or several step counts, and (with
  ``out``) writes ``report.json``, ``report.md`` and figures (`pirf.evaluation.report`).

The held-out reference set, unless given, is solved fresh: ``n_reference`` samples of the
model's PDE, parameters and resolution with seed = training seed + `REFERENCE_SEED_OFFSET`,
cached under ``${PIRF_CACHE:-~/.cache/pirf}/reference/``.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track

import pirf
from pirf import pdes
from pirf.data import DatasetInfo, find_nonfinite, generate_dataset, read_fields, read_info
from pirf.disk import scratch_array
from pirf.errors import ConfigError, DataFileError, NonFiniteError, PirfError, UnknownNameError
from pirf.evaluation.metrics import fidelity_report, finite_rows, relative_to_floor, residual_summary
from pirf.memory import trim_heap
from pirf.models.checkpoint import checkpoint_paths
from pirf.models.denoiser import FlowDenoiser
from pirf.models.factory import check_conditioning, load_denoiser
from pirf.models.record import check_model_record
from pirf.normalization import Normalization
from pirf.pdes.base import check_seed
from pirf.rewards import ResidualReward
from pirf.sampling import SAMPLERS, SampleOutput, flow_sigmas, karras_sigmas, per_sample_noise
from pirf.sampling.guidance import Guidance, sample_heun_dps
from pirf.sampling.value import VALUE_MODES, RewardValue, check_value_settings, sample_value_guided

REFERENCE_SEED_OFFSET = 10_000
"""Held-out reference seed = training-data seed + this (sample i of seed s is SeedSequence([s, i]))."""
STOCHASTIC_OPTIONS: dict[str, dict[str, float]] = {"ddim": {"eta": 1.0}, "flow_sde": {"noise_level": 0.7}}

Model = torch.nn.Module
Chain = Callable[..., SampleOutput]
"""A whole sampling chain ``chain(model, noise, sigmas) -> SampleOutput`` (see `generate_samples`);
a chain that draws step noise also takes the batch's per-sample generators as ``generator=``."""


# -- finding a model ---------------------------------------------------------------------------------
ZOO_VARIANTS = ("-flow", "-pirf", "-flow-pirf")
"""Zoo entries beside a benchmark's EDM base ``NAME``: its flow base and the PIRF fine-tunes."""


def zoo_model(name: str) -> Path:
    """Path of the model shipped as zoo entry ``name`` (it may not exist)."""
    return Path(str(resources.files("pirf") / "zoo" / name / "model.safetensors"))


def zoo_pde(name: str) -> str | None:
    """The benchmark a zoo entry name belongs to (``poisson-flow`` -> ``poisson``), or None."""
    if name in pdes.names():
        return name
    for suffix in ZOO_VARIANTS:
        if name.endswith(suffix) and name[: -len(suffix)] in pdes.names():
            return name[: -len(suffix)]
    return None


def zoo_names() -> list[str]:
    """Every zoo entry shipped in this installation (``poisson``, ``poisson-flow``, ...)."""
    root = Path(str(resources.files("pirf") / "zoo"))
    return sorted(p.name for p in root.iterdir() if zoo_pde(p.name) and (p / "model.safetensors").is_file())


def resolve_model(spec: str | os.PathLike) -> Path:
    """The checkpoint (``.safetensors`` path) that a command-line SPEC names.

    In order: a zoo entry (``poisson``, the EDM base; ``poisson-flow``, the flow base;
    ``poisson-pirf``, the PIRF fine-tune) -> the shipped model ``pirf/zoo/<name>/model.safetensors``;
    a run folder -> its ``model.safetensors``; a checkpoint path with or without suffix -> itself.
    Write ``./poisson`` for a folder that is named like a zoo entry. Anything else is an
    `UnknownNameError` listing the zoo entries.
    """
    text = str(spec)
    if zoo_pde(text) is not None:
        path = zoo_model(text)
        if not path.is_file():
            raise DataFileError(
                f"no shipped model {text!r} in this pirf installation (shipped: {', '.join(zoo_names())})",
                f"train one with `pirf pretrain {zoo_pde(text)}`, then give its file instead of the name: "
                f"--model runs/pretrain/{text}/model.safetensors (or the run folder runs/pretrain/{text})",
            )
        return path
    path = Path(spec)
    if path.is_dir():
        weights, meta = checkpoint_paths(path / "model")
        if weights.exists() or meta.exists():
            return weights
        raise DataFileError(
            f"the folder {path} holds no model.safetensors (an unfinished run?)",
            f"finish the run (`pirf pretrain ... --resume`) or pass a checkpoint such as "
            f"{path / 'checkpoints' / 'latest.safetensors'}",
        )
    weights, meta = checkpoint_paths(path)
    if weights.exists() or meta.exists():
        return weights
    close = difflib.get_close_matches(text, zoo_names(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownNameError(
        f"{text!r} is neither a shipped model, a run folder nor a model file",
        f"{hint}shipped models: {', '.join(zoo_names())}; or give a run folder or a .safetensors file",
    )


def load_model(spec: str | os.PathLike) -> tuple[Model, dict[str, Any], Path]:
    """(model in eval mode with its EMA weights, checkpoint record, checkpoint path) of SPEC,
    its record checked against the weights (`check_model_record`)."""
    path = resolve_model(spec)
    pde_name = zoo_pde(str(spec))
    expect = {"pde": pde_name} if pde_name is not None else None
    model, record = load_denoiser(path, expect=expect)
    pde = check_model_record(record, model.channels, model.resolution, path)
    check_conditioning(model, pde.conditioning(model.resolution), path)
    return model, record, path


def record_pde(record: dict[str, Any]) -> pdes.PDE:
    """The PDE instance (with its physical parameters) a model was trained on."""
    return pdes.get(record["pde"], **record.get("pde_params", {}))


# -- sampling ----------------------------------------------------------------------------------------
@dataclass
class Samples:
    """Physical samples of a model and what they cost. ``fields`` holds all ``n`` of them
    (`generate_samples`), or the first few of a draw streamed to a file (`sample`)."""

    fields: np.ndarray  # [n or fewer, C, R, R] float32, physical units (NaN/inf if the model diverged)
    steps: int
    sampler: str
    nfe_per_sample: int  # network calls per chain (Heun: 2 steps - 1)
    network_calls: int  # batched network calls in total (nfe_per_sample x batches)
    seconds: float
    device: str
    n: int = -1  # samples drawn; -1: len(fields)

    def __post_init__(self) -> None:
        if self.n < 0:
            self.n = len(self.fields)

    @property
    def samples_per_s(self) -> float:
        return self.n / max(self.seconds, 1e-12)

    def finite(self) -> np.ndarray:
        """Boolean ``[n]``: samples without NaN or inf."""
        return np.isfinite(self.fields).all(axis=(1, 2, 3))

    def cost(self) -> dict[str, Any]:
        return {
            "network_calls_per_sample": self.nfe_per_sample,
            "network_calls": self.network_calls,
            "seconds": self.seconds,
            "samples_per_s": self.samples_per_s,
            "device": self.device,
        }


def sample_seed(seed: int, index: int) -> int:
    """The torch seed of sample ``index``: 64 bits of ``SeedSequence([seed, index])``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])


def sigma_grid(model: Model, steps: int, sampler: str) -> torch.Tensor:
    """The noise levels of an n-step chain: Karras (EDM eq. 5) for EDM models, a uniform flow-time
    grid (`flow_sigmas`) for flow models and for the Flow-GRPO SDE."""
    if isinstance(model, FlowDenoiser) or sampler == "flow_sde":
        return flow_sigmas(steps)
    return karras_sigmas(steps)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a `torch.device` (default: cuda when available, else cpu), checked to exist."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}", "use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but no CUDA GPU is available", "use --device cpu")
    return resolved


def _check_sampling(n: int, steps: int, batch_size: int, sampler: str, seed: int = 0) -> None:
    if sampler not in SAMPLERS:
        close = difflib.get_close_matches(sampler, list(SAMPLERS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownNameError(f"unknown sampler {sampler!r}", f"{hint}use one of: {', '.join(SAMPLERS)}")
    for name, value in (("n", n), ("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            option = name.replace("_", "-")
            raise ConfigError(
                f"{name} must be a positive integer, got {value!r}", f"pass --{option} 1 or more"
            )
    check_seed(seed, "--seed")


def generate_samples(
    model: Model,
    record: dict[str, Any],
    n: int,
    steps: int,
    seed: int = 0,
    sampler: str = "heun",
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
    chain: Chain | None = None,
) -> Samples:
    """``n`` samples of ``model`` in physical units, drawn in batches under `torch.no_grad`.

    Sample i starts from x_T = sigma_max * z_i, z_i ~ N(0, I) drawn by its own CPU generator
    seeded with `sample_seed` (seed, i) (stochastic samplers draw their step noise from it
    too), so sample i depends only on (seed, i): a run of n = 4 is a prefix of n = 8. The chain
    runs in the model's normalized space on `sigma_grid`; the result is mapped back with the
    record's normalization, x = x_model * scale + shift.

    ``chain(model, noise, sigmas) -> SampleOutput`` replaces the sampler (e.g. a guided Heun
    chain, `pirf.sampling.guidance`); ``sampler`` then only names the noise-level grid. A chain
    with a ``generator`` keyword (a stochastic one, e.g. `guidance_chain`'s value guidance) is
    called with ``generator=`` the batch's per-sample generators, so its samples stay seeded
    per sample too.
    """
    stream = SampleStream(
        model,
        record,
        n,
        steps,
        seed,
        sampler,
        batch_size=batch_size,
        device=device,
        progress=progress,
        chain=chain,
    )
    return stream.collect()


class SampleStream:
    """The draw of `generate_samples`, one batch at a time: iterating yields each batch of
    physical fields ``[b, C, R, R]`` as it is drawn, so a caller that writes them away keeps
    memory bounded by one batch whatever ``n`` is. ``keep`` first samples are kept; after the
    iteration `samples` returns them with the cost of the whole draw."""

    def __init__(
        self,
        model: Model,
        record: dict[str, Any],
        n: int,
        steps: int,
        seed: int = 0,
        sampler: str = "heun",
        *,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        progress: bool = True,
        chain: Chain | None = None,
        keep: int | None = None,
    ) -> None:
        _check_sampling(n, steps, batch_size, sampler, seed)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.record, self.n, self.steps, self.seed, self.sampler = record, n, steps, seed, sampler
        self.batch_size, self.progress, self.chain = batch_size, progress, chain
        self.keep = n if keep is None else keep
        self.kept: list[np.ndarray] = []
        self.nfe = self.calls = 0
        self.seconds = 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        norm = Normalization.from_dict(self.record["normalization"])
        model, sampler = self.model, self.sampler
        shape = (model.channels, model.resolution, model.resolution)
        sigmas = sigma_grid(model, self.steps, sampler).to(torch.float32)
        options = STOCHASTIC_OPTIONS.get(sampler, {})
        seeded_chain = self.chain is not None and _takes_generator(self.chain)
        starts = range(0, self.n, self.batch_size)
        label = f"{sampler} {self.steps} steps"
        for start in track(starts, label, disable=not self.progress, transient=True):
            t0 = time.perf_counter()
            stop = min(start + self.batch_size, self.n)
            gens = [torch.Generator().manual_seed(sample_seed(self.seed, i)) for i in range(start, stop)]
            noise = per_sample_noise((stop - start, *shape), gens, device=self.device)
            with torch.no_grad():
                if self.chain is None:
                    result = SAMPLERS[sampler](model, noise, sigmas, generator=gens, **options)
                elif seeded_chain:
                    result = self.chain(model, noise, sigmas, generator=gens)
                else:
                    result = self.chain(model, noise, sigmas)
            batch = norm.denormalize(result.x0.float()).cpu().numpy()
            self.nfe, self.calls = result.nfe, self.calls + result.nfe
            self.seconds += time.perf_counter() - t0
            kept = sum(len(b) for b in self.kept)
            if kept + len(batch) <= self.keep:
                self.kept.append(batch)
            elif kept < self.keep:
                self.kept.append(batch[: self.keep - kept].copy())  # not a view pinning the batch
            del result, noise, gens
            trim_heap()  # resident memory stays flat over any number of batches (`pirf.memory`)
            yield batch

    def samples(self) -> Samples:
        """The kept samples and the cost of the draw (call after iterating)."""
        fields = np.concatenate(self.kept) if self.kept else np.zeros((0, self.model.channels, 1, 1))
        device = str(self.device)
        return Samples(fields, self.steps, self.sampler, self.nfe, self.calls, self.seconds, device, n=self.n)

    def collect(self) -> Samples:
        """Draw every batch, keeping all samples in memory."""
        for _ in self:
            pass
        return self.samples()


def _takes_generator(chain: Chain) -> bool:
    try:
        return "generator" in inspect.signature(chain).parameters
    except (TypeError, ValueError):  # a callable without an inspectable signature
        return False


# -- guidance for pirf sample ------------------------------------------------------------------------
GUIDANCE_KINDS = ("none", "dps", "value")
GUIDANCE_SAMPLER = {"dps": "heun", "value": "ddim"}
"""The chain each guidance runs: DPS guides EDM's Heun chain, value guidance a stochastic DDIM."""


@dataclass(frozen=True)
class GuidanceSettings:
    """Inference-time guidance of `sample` by the model's PDE residual reward
    (`ResidualReward` of the record's PDE, on denormalized fields). None means "not given".

    - ``kind="dps"``: DiffusionPDE's DPS on the Heun chain (`pirf.sampling.guidance`),
      x <- x - zeta grad ||R(D(x))||_2 after each of the last ``fraction`` of the steps; needs ``zeta``.
    - ``kind="value"``: value-guided DDIM (`pirf.sampling.value`, Uehara et al. 2024) toward
      p(x0) exp(r(x0) / alpha), r = -mean squared residual in physical units, so ``alpha`` is in
      those units (smaller guides harder); ``mode`` "gradient" (needs ``alpha``) or "best-of"
      (``candidates`` proposals per step, the best kept; alpha does not enter it); ``eta`` is
      DDIM's noise level in (0, 1] (default 1).
    """

    kind: str = "none"
    mode: str | None = None
    alpha: float | None = None
    candidates: int | None = None
    zeta: float | None = None
    fraction: float = 0.2
    eta: float | None = None

    def check(self) -> None:
        """Refuse unknown kinds and options that the chosen guidance would ignore."""
        if self.kind not in GUIDANCE_KINDS:
            close = difflib.get_close_matches(str(self.kind), GUIDANCE_KINDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownNameError(
                f"unknown guidance {self.kind!r}", f"{hint}use one of: {', '.join(GUIDANCE_KINDS)}"
            )
        value_only = {"--guidance-mode": self.mode, "--alpha": self.alpha, "--candidates": self.candidates}
        given = {"--zeta": self.zeta, "--eta": self.eta, **value_only}
        allowed = {"none": (), "dps": ("--zeta",), "value": ("--eta", *value_only)}[self.kind]
        stray = [flag for flag, v in given.items() if v is not None and flag not in allowed]
        if stray:
            raise ConfigError(
                f"{', '.join(stray)} given with --guidance {self.kind}, which does not use it",
                "--zeta belongs to --guidance dps; --guidance-mode, --alpha, --candidates and --eta "
                "to --guidance value",
            )
        if self.kind == "dps" and self.zeta is None:
            raise ConfigError(
                "--guidance dps needs a step size --zeta",
                "try a sweep such as 1e-4, 1e-3, 1e-2 (pirf bench sweeps 1e-5 .. 1 on held-out seeds)",
            )
        if self.kind == "value" and self.value_mode not in VALUE_MODES:
            close = difflib.get_close_matches(str(self.value_mode), VALUE_MODES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownNameError(
                f"unknown --guidance-mode {self.value_mode!r}", f"{hint}use one of: {', '.join(VALUE_MODES)}"
            )
        if self.kind == "value" and self.value_mode == "gradient" and self.alpha is None:
            raise ConfigError(
                "--guidance value (mode gradient) needs --alpha, the KL weight in reward units",
                "the reward is -(mean squared PDE residual) in physical units: start near the residual "
                "MSE of plain samples and lower alpha by factors of 10 (smaller guides harder; too "
                "small diverges; inf is plain DDIM); or use --guidance-mode best-of, which needs none",
            )
        if self.kind == "value":
            check_value_settings(**self.value_options())

    @property
    def value_mode(self) -> str:
        return "gradient" if self.mode is None else self.mode

    def value_options(self) -> dict[str, Any]:
        """`sample_value_guided`'s keyword arguments (best-of: alpha 1.0 unless given, for a
        finite alpha does not enter it)."""
        return {
            "alpha": 1.0 if self.alpha is None else self.alpha,
            "mode": self.value_mode,
            "candidates": 4 if self.candidates is None else self.candidates,
            "eta": 1.0 if self.eta is None else self.eta,
        }

    def describe(self) -> dict[str, Any]:
        """The settings that shaped the samples (for the provenance of the sample file)."""
        if self.kind == "dps":
            return {"kind": "dps", "zeta": self.zeta, "fraction": self.fraction, "loss": "||R(x)||_2"}
        if self.kind == "value":
            options = self.value_options()
            out: dict[str, Any] = {"kind": "value", "mode": options["mode"], "eta": options["eta"]}
            if options["mode"] == "best-of":
                out["candidates"] = options["candidates"]
            out["alpha"] = self.alpha
            out["alpha_units"] = "reward = -mean squared PDE residual, physical units"
            return out
        return {"kind": "none"}


def guided_sampler(guidance: GuidanceSettings, sampler: str | None) -> str:
    """The sampler (and noise-level grid) a guided run uses: ``sampler`` or the guidance's own
    chain (`GUIDANCE_SAMPLER`; Heun without guidance); another sampler is an error."""
    own = GUIDANCE_SAMPLER.get(guidance.kind)
    if own is None:
        return sampler or "heun"
    if sampler not in (None, own):
        raise ConfigError(
            f"--guidance {guidance.kind} runs the {own} chain, not --sampler {sampler}",
            f"drop --sampler, or pass --sampler {own}",
        )
    return own


def guidance_chain(guidance: GuidanceSettings, record: dict[str, Any]) -> Chain | None:
    """The sampling chain of ``guidance`` for the model of ``record`` (None: no guidance),
    guided by the residual reward of the record's PDE on denormalized fields."""
    guidance.check()
    if guidance.kind == "none":
        return None
    reward = ResidualReward(record_pde(record))
    norm = Normalization.from_dict(record["normalization"])
    if guidance.kind == "dps":
        dps_settings = Guidance(
            lambda x: reward.residual_norm(norm.denormalize(x)), guidance.zeta, guidance.fraction
        )

        def dps(model: Model, noise: torch.Tensor, sigmas: torch.Tensor) -> SampleOutput:
            return sample_heun_dps(model, noise, sigmas, dps_settings)

        return dps
    value, options = RewardValue(reward, norm), guidance.value_options()

    def value_guided(
        model: Model, noise: torch.Tensor, sigmas: torch.Tensor, generator: Any = None
    ) -> SampleOutput:
        return sample_value_guided(model, noise, sigmas, value, generator=generator, **options)

    return value_guided


# -- reference and training sets ---------------------------------------------------------------------
def cache_dir() -> Path:
    """``${PIRF_CACHE:-~/.cache/pirf}``."""
    return Path(os.environ.get("PIRF_CACHE") or "~/.cache/pirf").expanduser()


def reference_path(pde: pdes.PDE, resolution: int, seed: int, n: int, root: Path | None = None) -> Path:
    """Cache file of a reference set: ``<root>/reference/<pde>_<sha256(params, res, seed, n)[:16]>.h5``."""
    key = json.dumps(
        {"pde": pde.name, "params": pde.params(), "resolution": resolution, "seed": seed, "n": n},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return (root or cache_dir()) / "reference" / f"{pde.name}_{digest}.h5"


def _matches(info: DatasetInfo, pde: pdes.PDE, resolution: int) -> bool:
    return info.pde == pde and info.resolution == resolution


def _describe(pde: pdes.PDE, resolution: int) -> str:
    return f"{pde.name} {json.dumps(pde.params())} at {resolution}x{resolution}"


def held_out_reference(
    pde: pdes.PDE,
    resolution: int,
    seed: int,
    n: int = 256,
    *,
    root: Path | None = None,
    progress: bool = True,
) -> Path:
    """A cached file of ``n`` freshly solved samples (seed ``seed``), solved once and reused.

    The file is written atomically (`generate_dataset`); a cached file that is unreadable or
    describes other data is solved again.
    """
    path = reference_path(pde, resolution, seed, n, root)
    if path.exists():
        try:
            info = read_info(path)
            if _matches(info, pde, resolution) and info.n == n and info.seed == seed:
                return path
        except PirfError:
            pass  # truncated or foreign: solve it again
    path.parent.mkdir(parents=True, exist_ok=True)
    generate_dataset(pde, n, path, resolution=resolution, seed=seed, overwrite=True, progress=progress)
    return path


def _check_file(path: Path, pde: pdes.PDE, resolution: int, role: str, option: str) -> DatasetInfo:
    info = read_info(path)
    if not _matches(info, pde, resolution):
        raise DataFileError(
            f"the {role} file {path} holds {_describe(info.pde, info.resolution)}, "
            f"but the model was trained on {_describe(pde, resolution)}",
            f"pass a {option} file of the model's PDE, parameters and resolution"
            + (", or leave --reference out to solve one" if option == "--reference" else ""),
        )
    bad = find_nonfinite(path)
    if bad:
        raise NonFiniteError(
            f"the {role} file {path} has {len(bad)} sample(s) with NaN or inf (first: {bad[:5]})",
            f"pass a {option} file of finite samples (`pirf data check` finds the bad ones)",
        )
    return info


def training_set(
    record: dict[str, Any], pde: pdes.PDE, resolution: int, train: str | os.PathLike | None
) -> tuple[Path | None, str]:
    """(training file or None, note): ``train`` if given (it must match the model, else an
    error), else the record's data path if it still exists and matches, else None with the reason."""
    if train is not None:
        path = Path(train)
        _check_file(path, pde, resolution, "training", "--train")
        return path, "given with --train"
    recorded = record.get("data", {}).get("path")
    if not recorded:
        return None, "skipped: the model's record names no training file; pass --train FILE"
    path = Path(recorded)
    if not path.exists():
        return None, f"skipped: the training file {path} of the record is not here; pass --train FILE"
    try:
        _check_file(path, pde, resolution, "training", "--train")
    except PirfError as err:
        return None, f"skipped: {err.problem}"
    return path, "the training file named in the model's record"


# -- the metric path ---------------------------------------------------------------------------------
def score_samples(
    pde: pdes.PDE,
    samples: np.ndarray,
    reference: np.ndarray,
    floor: dict[str, dict[str, float]],
    *,
    train: np.ndarray | None = None,
) -> dict[str, Any]:
    """Residual statistics of ``samples`` beside the data ``floor``, and fidelity to ``reference``.

    ``residual[region]`` = mean/median over samples of the per-sample residual MSE and MAE;
    ``ratio_to_floor[region]`` = median MSE / the floor's median MSE (`relative_to_floor`; < 1
    is "below the data there", a sign of reward hacking on that region when it is far below);
    ``fidelity`` = `fidelity_report` (with memorization when ``train`` is given). Non-finite
    samples are counted in ``nonfinite`` and left out of every statistic.
    """
    finite = finite_rows(samples)
    out: dict[str, Any] = {"n": len(samples), "nonfinite": int((~finite).sum())}
    kept = samples if finite.all() else samples[finite]  # no copy of an all-finite (memory-mapped) set
    if len(kept) == 0:
        return out | {"residual": {}, "ratio_to_floor": {}, "mean_ratio_to_floor": {}, "fidelity": None}
    residual = residual_summary(pde, kept)  # scored after PDE.project (ResidualAccumulator)
    out["residual"] = residual
    out["ratio_to_floor"] = relative_to_floor(residual, floor, "median_mse")
    out["mean_ratio_to_floor"] = relative_to_floor(residual, floor, "mean_mse")
    out["fidelity"] = fidelity_report(pde, kept, reference, train=train) if len(kept) >= 2 else None
    return out


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers and NaN/inf as None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -- the whole evaluation ----------------------------------------------------------------------------
@dataclass
class Evaluation:
    """An evaluation's JSON-able ``report`` and the arrays its figures are drawn from."""

    report: dict[str, Any]
    samples: dict[int, np.ndarray]  # steps -> physical samples
    reference: np.ndarray
    pde: pdes.PDE


def _model_summary(record: dict[str, Any], path: Path) -> dict[str, Any]:
    return {
        "path": str(path),
        "sha256": record.get("sha256"),
        "pde": record["pde"],
        "pde_params": record.get("pde_params", {}),
        "fields": record.get("fields"),
        "resolution": record["resolution"],
        "kind": record["model"].get("kind"),
        "stage": record.get("stage"),
        "step": record.get("step"),
        "train_seconds": record.get("train_seconds"),
    }


def _reference(
    record: dict[str, Any],
    pde: pdes.PDE,
    resolution: int,
    reference: str | os.PathLike | None,
    n_reference: int,
    root: Path | None,
    progress: bool,
) -> tuple[Path, dict[str, Any]]:
    if reference is not None:
        path = Path(reference)
        info = _check_file(path, pde, resolution, "reference", "--reference")
        return path, {"path": str(path), "n": info.n, "seed": info.seed, "source": "given with --reference"}
    if n_reference < 2:
        raise ConfigError(f"n_reference must be at least 2, got {n_reference}", "use e.g. --n-reference 256")
    seed = int(record.get("data", {}).get("seed", 0)) + REFERENCE_SEED_OFFSET
    path = held_out_reference(pde, resolution, seed, n_reference, root=root, progress=progress)
    source = f"solved fresh with the held-out seed {seed} (training seed + {REFERENCE_SEED_OFFSET}), cached"
    return path, {"path": str(path), "n": n_reference, "seed": seed, "source": source}


def reference_for(
    record: dict[str, Any],
    reference: str | os.PathLike | None = None,
    n_reference: int = 256,
    *,
    cache: Path | None = None,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """(held-out reference file, note) for the model of ``record``: ``reference`` checked against
    the model's PDE, parameters and resolution, or ``n_reference`` samples solved with seed =
    training seed + `REFERENCE_SEED_OFFSET` and cached under ``cache`` (default `cache_dir`)."""
    pde, resolution = record_pde(record), int(record["resolution"])
    return _reference(record, pde, resolution, reference, n_reference, cache, progress)


def run_evaluation(
    spec: str | os.PathLike,
    *,
    n: int = 256,
    steps: Sequence[int] = (20,),
    seed: int = 0,
    sampler: str = "heun",
    reference: str | os.PathLike | None = None,
    train: str | os.PathLike | None = None,
    n_reference: int = 256,
    batch_size: int = 64,
    device: str | None = None,
    cache: Path | None = None,
    progress: bool = True,
) -> Evaluation:
    """Sample the model SPEC at each step count and score the samples (see `evaluate`)."""
    steps = list(dict.fromkeys(steps))  # unique, in the given order
    if not steps:
        raise ConfigError("no step count given", "pass --steps S (repeatable: --steps 20 --steps 80)")
    for s in steps:
        _check_sampling(n, s, batch_size, sampler, seed)
    if n < 2:
        raise ConfigError(f"evaluation needs at least 2 samples, got n={n}", "pass --n 2 or more")
    resolve_device(device)
    t0 = time.perf_counter()
    model, record, path = load_model(spec)
    pde, resolution = record_pde(record), int(record["resolution"])
    ref_path, ref_note = _reference(record, pde, resolution, reference, n_reference, cache, progress)
    ref = read_fields(ref_path)
    train_path, train_note = training_set(record, pde, resolution, train)
    train_fields = read_fields(train_path) if train_path is not None else None
    if train_path is not None and Path(ref_path).resolve() == train_path.resolve():
        ref_note["source"] += (
            "; WARNING: it is the training set, so fidelity is not measured on held-out data"
        )
    floor = record.get("data", {}).get("floor") or {}
    floor_source = "the training data (model record)"
    if not floor:
        floor, floor_source = residual_summary(pde, ref), "the reference set (the record has no floor)"
    report: dict[str, Any] = {
        "pirf_version": pirf.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": _model_summary(record, path),
        "settings": {"n": n, "steps": steps, "seed": seed, "sampler": sampler, "batch_size": batch_size},
        "reference": ref_note,
        "train": {"path": None if train_path is None else str(train_path), "note": train_note}
        | ({"n": len(train_fields)} if train_fields is not None else {}),
        "floor": floor,
        "floor_source": floor_source,
        "runs": [],
    }
    samples: dict[int, np.ndarray] = {}
    for s in steps:
        stream = SampleStream(
            model,
            record,
            n,
            s,
            seed,
            sampler,
            batch_size=batch_size,
            device=device,
            progress=progress,
            keep=0,
        )
        drawn, samples[s] = _draw_to_scratch(stream)
        run = {"steps": s, "cost": drawn.cost()}
        run |= score_samples(pde, samples[s], ref, floor, train=train_fields)
        report["runs"].append(run)
    report["seconds"] = time.perf_counter() - t0
    return Evaluation(jsonable(report), samples, ref, pde)


def _draw_to_scratch(stream: SampleStream) -> tuple[Samples, np.ndarray]:
    """Draw ``stream`` into a disk-backed array (`pirf.disk.scratch_array`): an evaluation of
    any number of samples holds one batch in memory, the rest is paged by the kernel."""
    model = stream.model
    fields = scratch_array(
        (stream.n, model.channels, model.resolution, model.resolution), f"{stream.n} evaluation samples"
    )
    position = 0
    for batch in stream:
        fields[position : position + len(batch)] = batch
        position += len(batch)
    return stream.samples(), fields


def evaluate(
    spec: str | os.PathLike,
    *,
    n: int = 256,
    steps: Sequence[int] = (20,),
    seed: int = 0,
    sampler: str = "heun",
    reference: str | os.PathLike | None = None,
    train: str | os.PathLike | None = None,
    n_reference: int = 256,
    batch_size: int = 64,
    device: str | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    cache: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the model SPEC (`resolve_model`): for each step count in ``steps`` draw ``n``
    samples (seed ``seed``, `generate_samples`) and score them (`score_samples`): residual per
    region beside the data floor of the model's record, fidelity to a held-out reference set
    (``reference``, or ``n_reference`` freshly solved samples, cached under ``cache`` or
    `cache_dir`), memorization against the training set (``train``, or the record's data file
    when it is here; else skipped, and the report says so), and cost.

    Returns the report (JSON-able dict: ``model``, ``settings``, ``reference``, ``train``,
    ``floor``, ``runs`` = one entry per step count). With ``out`` writes ``report.json``,
    ``report.md``, ``samples.png``, ``residuals.png`` and ``spectra.png`` there; existing ones
    are an `OutputExistsError` unless ``overwrite``, checked before any sampling.
    """
    from pirf.evaluation.report import EVALUATION_FILES, check_outputs, write_evaluation

    if out is not None:
        check_outputs(Path(out), EVALUATION_FILES, overwrite)
    result = run_evaluation(
        spec,
        n=n,
        steps=steps,
        seed=seed,
        sampler=sampler,
        reference=reference,
        train=train,
        n_reference=n_reference,
        batch_size=batch_size,
        device=device,
        cache=cache,
        progress=progress,
    )
    if out is not None:
        write_evaluation(result, Path(out), overwrite=overwrite)
    return result.report


# -- pirf sample -------------------------------------------------------------------------------------
def sample(
    spec: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int = 16,
    steps: int = 20,
    seed: int = 0,
    sampler: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    guidance: GuidanceSettings | None = None,
) -> tuple[Path, Samples, dict[str, Any]]:
    """Draw ``n`` samples of the model SPEC and write ``out/samples.h5`` (a pirf data file in
    physical units whose ``floor`` is the model's data floor, so ``pirf data check`` compares the
    samples with the data) and ``out/samples.png``. Returns (file, samples, checkpoint record).

    The samples are written batch by batch as they are drawn (`SampleStream`), so memory stays
    bounded by one batch for any ``n``; the returned `Samples` holds the first few and the cost.
    ``sampler`` defaults to heun; ``guidance`` (`GuidanceSettings`) guides the chain by the
    model's PDE residual reward (DPS on Heun, or value-guided DDIM) and is recorded in the
    file's provenance under ``guidance``."""
    from pirf.evaluation.report import N_SHOW, SAMPLE_FILES, check_outputs, write_sample_files

    out = Path(out)
    guidance = guidance or GuidanceSettings()
    guidance.check()
    sampler = guided_sampler(guidance, sampler)
    check_outputs(out, SAMPLE_FILES, overwrite)
    _check_sampling(n, steps, batch_size, sampler, seed)
    resolve_device(device)
    model, record, path = load_model(spec)
    chain = guidance_chain(guidance, record)
    stream = SampleStream(
        model,
        record,
        n,
        steps,
        seed,
        sampler,
        batch_size=batch_size,
        device=device,
        progress=progress,
        chain=chain,
        keep=N_SHOW,
    )

    def provenance() -> dict[str, Any]:
        return {
            "model": str(path),
            "sha256": record.get("sha256"),
            "sampler": sampler,
            "steps": steps,
            "seed": seed,
            "n": n,
            "guidance": guidance.describe(),
            **stream.samples().cost(),
        }

    fix = (
        "guide more gently: a larger --alpha (value) or a smaller --zeta (dps), or more --steps"
        if guidance.kind != "none"
        else "the model diverged: use another checkpoint, or more sampler steps"
    )
    file = write_sample_files(
        out, stream, record_pde(record), record, provenance, overwrite=overwrite, nonfinite_fix=fix
    )
    return file, stream.samples(), record


__all__ = [
    "GUIDANCE_KINDS",
    "REFERENCE_SEED_OFFSET",
    "Evaluation",
    "GuidanceSettings",
    "Samples",
    "cache_dir",
    "evaluate",
    "generate_samples",
    "guidance_chain",
    "guided_sampler",
    "held_out_reference",
    "jsonable",
    "load_model",
    "record_pde",
    "reference_for",
    "reference_path",
    "resolve_device",
    "resolve_model",
    "run_evaluation",
    "sample",
    "sample_seed",
    "score_samples",
    "sigma_grid",
    "training_set",
    "zoo_model",
    "zoo_names",
    "zoo_pde",
]
