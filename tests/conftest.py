import os

import numpy as np
import pytest


def convergence_order(errors: list[float], resolutions: list[int]) -> float:
    """Least-squares slope of log(error) against log(h), h ~ 1 / resolution."""
    h = 1.0 / np.asarray(resolutions, dtype=float)
    return float(np.polyfit(np.log(h), np.log(errors), 1)[0])


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep held-out reference sets solved by tests out of the user's ~/.cache/pirf."""
    cache = tmp_path_factory.mktemp("pirf-cache")
    old = os.environ.get("PIRF_CACHE")
    os.environ["PIRF_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("PIRF_CACHE", None)
    else:
        os.environ["PIRF_CACHE"] = old
