import numpy as np


def convergence_order(errors: list[float], resolutions: list[int]) -> float:
    """Least-squares slope of log(error) against log(h), h ~ 1 / resolution."""
    h = 1.0 / np.asarray(resolutions, dtype=float)
    return float(np.polyfit(np.log(h), np.log(errors), 1)[0])
