"""One seeded, batched draw of a trained model's samples in physical units.

`pirf sample`, `pirf evaluate`, the fine-tune's held-out evaluation and the bench all draw here:
sample i starts from noise drawn by a generator seeded with ``SeedSequence([seed, i])``
(`sample_seed`), so it depends only on (seed, i) -- ``n = 10`` is a prefix of ``n = 100``,
whatever the batch size -- and every chain runs on the model's grid (`sigma_grid`: Karras for EDM
models, the uniform flow-time grid for flow models and the Flow-GRPO SDE).
"""

from __future__ import annotations

import difflib
import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.progress import track

from pirf.errors import ConfigError, UnknownNameError
from pirf.memory import trim_heap
from pirf.models.denoiser import SIGMA_MAX, FlowDenoiser
from pirf.normalization import Normalization
from pirf.pdes.base import check_seed
from pirf.sampling.chain import SampleOutput, per_sample_noise
from pirf.sampling.samplers import sample_euler, sample_heun
from pirf.sampling.schedules import flow_sigmas, karras_sigmas
from pirf.sampling.stochastic import sample_ddim, sample_flow_sde

SAMPLERS = {"euler": sample_euler, "heun": sample_heun, "ddim": sample_ddim, "flow_sde": sample_flow_sde}
"""The samplers by name (`pirf sample --sampler`)."""
STOCHASTIC_OPTIONS: dict[str, dict[str, float]] = {"ddim": {"eta": 1.0}, "flow_sde": {"noise_level": 0.7}}

Model = torch.nn.Module
Chain = Callable[..., SampleOutput]
"""A whole sampling chain ``chain(model, noise, sigmas) -> SampleOutput`` (see `generate_samples`);
a chain that draws step noise also takes the batch's per-sample generators as ``generator=``."""


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


def sigma_grid(
    model: Model | str,
    steps: int,
    sampler: str = "heun",
    *,
    sigma_min: float = 0.002,
    sigma_max: float | None = None,
    rho: float = 7.0,
) -> torch.Tensor:
    """The noise levels of an n-step chain, the one grid rule of every draw and every fine-tune.

    ``sigma_max`` None: the model's own (`_FieldModel.sigma_max`; 80 for a kind given by name).
    EDM models: the Karras grid (EDM eq. 5; ``sigma_min``, ``sigma_max``, ``rho``). Flow models
    (a `FlowDenoiser` or the kind ``"flow"``) and the Flow-GRPO SDE: the uniform flow-time grid
    from t_max = sigma_max / (1 + sigma_max) down to 0 (`flow_sigmas`).
    """
    flow = model == "flow" if isinstance(model, str) else isinstance(model, FlowDenoiser)
    if sigma_max is None:
        sigma_max = SIGMA_MAX if isinstance(model, str) else float(getattr(model, "sigma_max", SIGMA_MAX))
    if flow or sampler == "flow_sde":
        return flow_sigmas(steps, t_max=sigma_max / (1 + sigma_max))
    return karras_sigmas(steps, sigma_min, sigma_max, rho)


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


def check_sampling(n: int, steps: int, batch_size: int, sampler: str, seed: int = 0) -> None:
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
    sigmas: torch.Tensor | None = None,
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
    per sample too. ``sigmas`` (``steps + 1`` levels) replaces the default grid, e.g. a
    fine-tune's own ``sigma_min`` (`sigma_grid` with its settings).
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
        sigmas=sigmas,
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
        sigmas: torch.Tensor | None = None,
    ) -> None:
        check_sampling(n, steps, batch_size, sampler, seed)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.record, self.n, self.steps, self.seed, self.sampler = record, n, steps, seed, sampler
        self.batch_size, self.progress, self.chain = batch_size, progress, chain
        self.keep = n if keep is None else keep
        if sigmas is not None and sigmas.shape != (steps + 1,):
            raise ConfigError(
                f"a {steps}-step draw was given {tuple(sigmas.shape)} noise levels",
                f"give {steps + 1} levels (sigma_grid(model, {steps}, ...))",
            )
        self.sigmas = sigmas
        self.kept: list[np.ndarray] = []
        self.nfe = self.calls = 0
        self.seconds = 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        norm = Normalization.from_dict(self.record["normalization"])
        model, sampler = self.model, self.sampler
        shape = (model.channels, model.resolution, model.resolution)
        sigmas = self.sigmas if self.sigmas is not None else sigma_grid(model, self.steps, sampler)
        sigmas = sigmas.to(torch.float32)
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
