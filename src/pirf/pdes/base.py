"""The `PDE` interface every benchmark implements, and the small types it speaks in.

A PDE instance is a frozen dataclass of its physical parameters (viscosity, wavenumber, ...).
It knows how to *generate* solution fields with a real numerical solver and how to score any
field with a differentiable, batched *residual* in physical units.

Conventions (all PDEs):
- fields are arrays/tensors ``[B, C, H, W]``, channel order ``PDE.fields``; ``H`` is the
  y (or t) axis, ``W`` the x axis; ``H == W == resolution``.
- ``residual(x)`` returns a map ``[B, H, W]``: the equation residual where the stencil applies
  and the boundary-condition residual on boundary pixels; ``regions(x)`` partitions the pixels
  into named parts (``interior``, ``boundary``, and for Darcy ``interface``) so that each is
  reported on its own.
- every sample ``i`` of a data set with seed ``s`` is drawn from its own generator
  ``SeedSequence([s, i])``: data are identical whatever the chunking or batch size.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from pirf.errors import ConfigError, NonFiniteError, ShapeError

if TYPE_CHECKING:
    from torch import Tensor

BoundaryKind = Literal["dirichlet", "periodic", "periodic-x"]


@dataclass(frozen=True)
class Grid:
    """The sampling grid of a benchmark at one resolution.

    ``axes`` names the two image axes (rows, columns), ``spacing`` their physical step and
    ``coords`` the node positions along each axis.
    """

    resolution: int
    axes: tuple[str, str]
    spacing: tuple[float, float]
    boundary: BoundaryKind
    coords: tuple[np.ndarray, np.ndarray] = dataclasses.field(repr=False, compare=False)


def unit_square_grid(resolution: int) -> Grid:
    """Vertex-centred grid on [0, 1]^2 with the boundary nodes: x_j = j h, h = 1 / (R - 1)."""
    x = np.linspace(0.0, 1.0, resolution)
    h = 1.0 / (resolution - 1)
    return Grid(resolution, ("y", "x"), (h, h), "dirichlet", (x, x))


def check_seed(seed: int, name: str = "seed") -> None:
    """Refuse a seed that `numpy.random.SeedSequence` cannot take (it needs an integer >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {seed!r}", f"pass e.g. {name}=0")


def sample_rngs(seed: int, start: int, n: int) -> list[np.random.Generator]:
    """One independent generator per sample index: ``SeedSequence([seed, i])``, i in [start, start+n)."""
    return [np.random.default_rng(np.random.SeedSequence([seed, i])) for i in range(start, start + n)]


def _all_finite(x: Tensor | np.ndarray, batch: int = 256) -> bool:
    """Whether ``x`` holds no NaN or inf, checked ``batch`` samples at a time (an array on disk,
    e.g. a memory map, is never held in memory whole)."""
    import torch

    if isinstance(x, torch.Tensor):
        return bool(torch.isfinite(x).all())
    return all(bool(np.isfinite(x[i : i + batch]).all()) for i in range(0, len(x), batch))


@dataclass(frozen=True)
class ConditioningField:
    """A fixed input field the network sees beside the noisy channels and never generates.

    ``name`` labels it (e.g. ``"sin(4y)"``); ``formula`` says how to build it from the grid in
    plain words a user outside pirf can follow (it is written to exported models); ``values``
    is the ``[R, R]`` float32 array on the grid of the resolution it was built for.
    """

    name: str
    formula: str
    values: np.ndarray = dataclasses.field(repr=False, compare=False)


@dataclass(frozen=True)
class PDE(ABC):
    """A benchmark: physical parameters, a numerical solver and a residual operator.

    Subclasses are frozen dataclasses whose fields are the physical parameters; they set the
    class variables below and implement `grid`, `solve_samples` and `residual`.
    """

    name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]
    boundary: ClassVar[BoundaryKind]
    description: ClassVar[str]
    solver: ClassVar[str]
    default_resolution: ClassVar[int]
    paper_resolution: ClassVar[int] = 128
    paper_params: ClassVar[dict[str, Any]] = {}
    """Parameters of the papers' setting at ``paper_resolution`` (where they differ from the CPU defaults)."""
    min_resolution: ClassVar[int] = 8
    reward_channels: ClassVar[tuple[str, ...] | None] = None
    """Channels a residual reward may move by default (None: all of them). Inputs of the problem
    (a coefficient, a source) are best held fixed: a reward that may move them can satisfy the
    equation by changing the problem, which is where reward hacking starts (`pirf.rewards`)."""
    samples_per_group: ClassVar[int] = 1
    """Samples that one solver run yields together (Kolmogorov: frames of one trajectory)."""
    discrete_fields: ClassVar[tuple[str, ...]] = ()
    """Channels whose values lie on a few levels that `project` snaps them to (Darcy's two-phase
    ``a``): reconstructions score them by the share of wrongly snapped pixels, not an L2 error."""

    # -- parameters ------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The physical parameters as a JSON-serializable dict (what the data file records)."""
        return dataclasses.asdict(self)

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    # -- grid and generation ---------------------------------------------------------------
    @abstractmethod
    def grid(self, resolution: int) -> Grid:
        """The grid of a ``resolution x resolution`` sample."""

    @abstractmethod
    def solve_samples(self, rngs: Sequence[np.random.Generator], resolution: int, start: int) -> np.ndarray:
        """Draw inputs with ``rngs`` (one per sample) and solve: float64 ``[len(rngs), C, R, R]``."""

    def check_resolution(self, resolution: int) -> None:
        """Refuse a resolution the stencil or solver cannot work with."""
        if not isinstance(resolution, (int, np.integer)) or resolution < self.min_resolution:
            raise ConfigError(
                f"{self.name}: resolution {resolution!r} is too small for its stencil and solver",
                f"use a resolution of at least {self.min_resolution} "
                f"(CPU default {self.default_resolution}, paper {self.paper_resolution})",
            )

    def generate(self, n: int, resolution: int | None = None, seed: int = 0, start: int = 0) -> np.ndarray:
        """Samples ``start .. start+n-1`` of the data set with this ``seed``: float32 ``[n, C, R, R]``.

        Sample ``i`` depends only on ``(seed, i)`` and the parameters, never on ``n`` or ``start``.
        """
        resolution = self.default_resolution if resolution is None else resolution
        self.check_resolution(resolution)
        if n < 0 or start < 0:
            raise ConfigError(f"n={n} and start={start} must be non-negative", "pass n >= 0 and start >= 0")
        check_seed(seed)
        if n == 0:
            return np.zeros((0, len(self.fields), resolution, resolution), np.float32)
        x = self.solve_samples(sample_rngs(seed, start, n), resolution, start)
        return np.asarray(x, dtype=np.float32)

    # -- conditioning ----------------------------------------------------------------------
    def conditioning(self, resolution: int) -> tuple[ConditioningField, ...]:
        """Fixed fields that tell the network where it is, where the equation depends on position.

        A translation-equivariant (periodic) U-Net cannot know the phase of a position-dependent
        term such as Kolmogorov's forcing -A cos(k_f y): it draws flows shifted by any amount.
        Fields returned here are concatenated to the network's input at every call (sampling,
        fine-tuning, guidance alike) and carried in the checkpoint. Default: none (the equation
        is translation-invariant, or its boundary already breaks the symmetry). A plug-in PDE
        overrides this to declare its own.
        """
        return ()

    # -- residual --------------------------------------------------------------------------
    @abstractmethod
    def residual(self, x: Tensor) -> Tensor:
        """Residual map ``[B, H, W]`` of physical fields ``x: [B, C, H, W]`` (differentiable)."""

    def project(self, x: Tensor) -> Tensor:
        """Map generated fields onto the data's admissible set before a reward scores them.

        The identity here; Darcy snaps the coefficient onto its two phases (PIRF, Sec. 5.1).
        """
        return x

    def regions(self, x: Tensor) -> dict[str, Tensor]:
        """Boolean masks ``[B, H, W]`` that partition the pixels into named residual parts.

        Default: ``interior`` and, for non-periodic boundaries, the one-pixel ``boundary`` ring
        (for ``periodic-x``, the first and last rows, i.e. the time edges).
        """
        import torch

        b, _, h, w = x.shape
        edge = torch.zeros(h, w, dtype=torch.bool, device=x.device)
        if self.boundary == "dirichlet":
            edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
        elif self.boundary == "periodic-x":
            edge[0, :] = edge[-1, :] = True
        edge = edge.expand(b, h, w)
        return {"interior": ~edge, "boundary": edge}

    def residual_stats(self, x: Tensor) -> dict[str, dict[str, Tensor]]:
        """Per-sample MSE and MAE of the residual over all pixels and over each region.

        Returns ``{"all": {"mse": [B], "mae": [B]}, "interior": {...}, ...}``; an empty region
        (e.g. the boundary of a periodic problem) is left out.
        """
        r = self.residual(x)
        stats = {"all": {"mse": r.pow(2).mean(dim=(1, 2)), "mae": r.abs().mean(dim=(1, 2))}}
        for part, mask in self.regions(x).items():
            count = mask.sum(dim=(1, 2))
            if bool((count == 0).all()):
                continue
            m = mask.to(r.dtype)
            denom = count.clamp(min=1).to(r.dtype)
            stats[part] = {
                "mse": (r.pow(2) * m).sum(dim=(1, 2)) / denom,
                "mae": (r.abs() * m).sum(dim=(1, 2)) / denom,
            }
        return stats

    # -- validation ------------------------------------------------------------------------
    def check_fields(self, x: Tensor | np.ndarray, what: str = "fields") -> None:
        """Refuse input of the wrong rank, channel count or size, or with NaN/inf."""
        shape = tuple(x.shape)
        c = len(self.fields)
        if len(shape) != 4 or shape[1] != c:
            raise ShapeError(
                f"{self.name}: {what} have shape {shape}, expected [B, {c}, H, W] "
                f"with channels {self.fields}",
                "stack the channels in that order along dim 1 (add a batch dim for one sample)",
            )
        if shape[2] != shape[3] or shape[2] < self.min_resolution:
            raise ShapeError(
                f"{self.name}: {what} are {shape[2]}x{shape[3]}, expected square fields of at "
                f"least {self.min_resolution}x{self.min_resolution}",
                "resample the fields onto a square grid of a supported resolution",
            )
        if not _all_finite(x):
            raise NonFiniteError(
                f"{self.name}: {what} contain NaN or inf",
                "drop or repair the non-finite samples before scoring them",
            )
