"""The torch `Dataset` of a pirf data file (`pirf.data.FieldDataset`).

Kept apart from the rest of `pirf.data`, and loaded on first use, so that reading and describing
files needs no torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from pirf import pdes
from pirf.data.check import describe_outliers, find_nonfinite, find_outliers
from pirf.data.read import read_fields, read_info
from pirf.errors import DataFileError, NonFiniteError
from pirf.normalization import Normalization


class FieldDataset(torch.utils.data.Dataset):
    """A pirf data file as a torch `Dataset` of normalized ``[C, R, R]`` float32 tensors.

    The file is validated and scanned for NaN/inf and outlier values (`find_outliers`) once at
    construction; fields are loaded into
    memory (``in_memory=True``, default: data sets at CPU scale are tens of MB) or read lazily.
    ``normalized=False`` yields physical units.
    """

    def __init__(self, path: str | os.PathLike, *, normalized: bool = True, in_memory: bool = True) -> None:
        self.info = read_info(path)
        self.path = Path(path)
        self.normalized = normalized
        bad = find_nonfinite(path)
        if bad:
            raise NonFiniteError(
                f"{path}: {len(bad)} sample(s) contain NaN or inf (first: {bad[:5]})",
                "regenerate the file, or drop those samples and write a new one",
            )
        found = find_outliers(path)
        if found:
            raise DataFileError(
                f"{path}: {describe_outliers(found, self.info.pde.fields)}; such values would swamp "
                "the normalization and the loss",
                "regenerate the file, or drop those samples and write a new one "
                "(`pirf data check` lists them)",
            )
        self._data = read_fields(path) if in_memory else None
        self._file: h5py.File | None = None

    @property
    def pde(self) -> pdes.PDE:
        return self.info.pde

    @property
    def normalization(self) -> Normalization:
        return self.info.normalization

    def __len__(self) -> int:
        return self.info.n

    def _raw(self, index: int) -> np.ndarray:
        if self._data is not None:
            return self._data[index]
        if self._file is None:  # opened lazily, once per DataLoader worker
            self._file = h5py.File(self.path, "r")
        return np.asarray(self._file["fields"][index], dtype=np.float32)

    def __getitem__(self, index: int) -> torch.Tensor:
        x = torch.from_numpy(np.array(self._raw(index), dtype=np.float32))[None]
        if self.normalized:
            x = self.normalization.normalize(x)
        return x[0]


__all__ = ["FieldDataset"]
