"""ETDRK4: the exponential time-differencing Runge-Kutta scheme of Cox & Matthews (2002),
with the contour-integral coefficients of Kassam & Trefethen (2005, SIAM J. Sci. Comput. 26).

For a semi-linear system v_t = L v + N(v) in Fourier space with a *diagonal* stiff part L
(viscosity, drag), ETDRK4 integrates L exactly and is 4th order in time: stiff-safe at any
viscosity, with a time step set by the nonlinearity only. Works batched: ``v`` may carry
leading batch dims that broadcast against ``L``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

NonLinear = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ETDRK4:
    """Precomputed ETDRK4 coefficients for a diagonal linear operator ``L`` and step ``dt``."""

    dt: float
    e: np.ndarray
    e2: np.ndarray
    q: np.ndarray
    f1: np.ndarray
    f2: np.ndarray
    f3: np.ndarray

    @classmethod
    def build(cls, linear: np.ndarray, dt: float, contour_points: int = 32) -> ETDRK4:
        """Coefficients by the mean over ``contour_points`` points of a circle around each dt*L
        (Kassam & Trefethen eq. 2.5 with the contour trick of their Sec. 5)."""
        lin = dt * np.asarray(linear, dtype=np.complex128)
        r = np.exp(1j * np.pi * (np.arange(1, contour_points + 1) - 0.5) / contour_points)
        lr = lin[..., None] + r
        exp_lr = np.exp(lr)

        def mean(z: np.ndarray) -> np.ndarray:
            out = z.mean(axis=-1)
            return out.real if np.isrealobj(linear) else out

        return cls(
            dt=dt,
            e=np.exp(lin).real if np.isrealobj(linear) else np.exp(lin),
            e2=np.exp(lin / 2).real if np.isrealobj(linear) else np.exp(lin / 2),
            q=dt * mean((np.exp(lr / 2) - 1) / lr),
            f1=dt * mean((-4 - lr + exp_lr * (4 - 3 * lr + lr**2)) / lr**3),
            f2=dt * mean((2 + lr + exp_lr * (lr - 2)) / lr**3),
            f3=dt * mean((-4 - 3 * lr - lr**2 + exp_lr * (4 - lr)) / lr**3),
        )

    def step(self, v: np.ndarray, nonlinear: NonLinear) -> np.ndarray:
        """One step v(t) -> v(t + dt) (Cox & Matthews eq. 26-29)."""
        nv = nonlinear(v)
        a = self.e2 * v + self.q * nv
        na = nonlinear(a)
        b = self.e2 * v + self.q * na
        nb = nonlinear(b)
        c = self.e2 * a + self.q * (2 * nb - nv)
        nc = nonlinear(c)
        return self.e * v + nv * self.f1 + 2 * (na + nb) * self.f2 + nc * self.f3
