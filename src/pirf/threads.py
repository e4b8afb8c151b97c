"""How many CPU threads torch computes with: chosen by the machine's load, said, and kept on resume.

torch uses one thread per core by default. On a machine that other jobs also keep busy (a shared
lab machine, a laptop compiling), those threads wait for each other and for the other jobs, and a
command runs several times slower than on the cores actually free
(``benchmarks/threads_under_load.py`` measures it). So every computing command chooses, in order:

1. ``pirf --threads N`` (the global option), then the ``PIRF_THREADS`` environment variable;
2. ``OMP_NUM_THREADS``, which torch itself reads (the choice is the count torch started with);
3. by load: the cores this process may run on, less the cores other jobs keep busy, rounded,
   at least 1 and at most torch's own default. "Busy" is the number of other tasks running now
   (Linux's run queue, ``/proc/loadavg``, read a few times), capped by the 1-minute load average:
   the run queue alone counts a job's brief burst, the load average alone still counts for a
   minute a job that has just ended (a queue of runs would each see its predecessor),

and says what it chose. The thread count changes float results at round-off (a reduction split
over two threads adds in another order), so a run records its count in its checkpoints and a
resumed run takes the recorded count, unless the user named one: then the resumed run is
reproducible only to round-off, and it says so.

This module imports torch only in the functions that set or read torch's count.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

ENV_VAR = "PIRF_THREADS"


@dataclass(frozen=True)
class ThreadChoice:
    """A thread count and where it came from: ``"option"`` (--threads), ``"env"`` (PIRF_THREADS),
    ``"omp"`` (OMP_NUM_THREADS), ``"load"`` (chosen by the load), ``"recorded"`` (a resumed run's)."""

    threads: int
    source: str
    detail: str = ""

    @property
    def explicit(self) -> bool:
        """Whether the user named the count (then a resumed run keeps it)."""
        return self.source in ("option", "env", "omp")

    def describe(self) -> str:
        """One line for the user: ``threads: 1 (load 1.9 from other jobs on 2 cores; ...)``
        (load: the cores other jobs keep busy, `busy_cores`)."""
        hint = "" if self.explicit else "; --threads N to choose"
        return f"threads: {self.threads} ({self.detail}{hint})"


_requested: int | None = None
_current: ThreadChoice | None = None


def request_threads(threads: int | None) -> None:
    """Remember the count of ``pirf --threads N`` for the command that follows (None: choose)."""
    global _requested
    if threads is not None and threads < 1:
        from pirf.errors import ConfigError

        raise ConfigError(f"--threads {threads}: a thread count is at least 1", "pass --threads 1 or more")
    _requested = threads


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; all of the machine's without one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average (0 where the system has none to report)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def running_elsewhere(reads: int = 5, pause: float = 0.02) -> float | None:
    """The median, over ``reads`` reads ``pause`` s apart, of the tasks running now besides this
    one (the 4th field of ``/proc/loadavg``, ``running/total``, less 1); None off Linux."""
    counts = []
    for i in range(reads):
        try:
            with open("/proc/loadavg") as file:
                running = int(file.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        counts.append(max(0, running - 1))
        if i + 1 < reads:
            time.sleep(pause)
    return float(statistics.median(counts))


def busy_cores() -> float:
    """How many cores other jobs keep busy: the tasks running elsewhere now, at most the 1-minute
    load average (the load average alone where there is no run queue to read)."""
    average = load_average()
    now = running_elsewhere()
    return average if now is None else min(now, average)


def _env_count(environ: Mapping[str, str], name: str) -> int | None:
    """A positive thread count from ``environ[name]``; None when unset; a clear error when bad."""
    value = environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        from pirf.errors import ConfigError

        raise ConfigError(f"{name}={value!r} is not a thread count", f"set {name} to a whole number >= 1")
    return int(value)


def choose_threads(
    requested: int | None,
    torch_default: int,
    *,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
    load: float | None = None,
) -> ThreadChoice:
    """The thread count to use: ``requested``, else ``PIRF_THREADS``, else ``OMP_NUM_THREADS``
    (``torch_default`` then already honours it), else ``round(cores - load)`` clipped to
    [1, torch_default]. ``cores`` and ``load`` (the cores other jobs keep busy, `busy_cores`)
    default to this machine's."""
    environ = os.environ if environ is None else environ
    if requested is not None:
        return ThreadChoice(requested, "option", "--threads")
    if (count := _env_count(environ, ENV_VAR)) is not None:
        return ThreadChoice(count, "env", f"{ENV_VAR}={count}")
    if _env_count(environ, "OMP_NUM_THREADS") is not None:
        return ThreadChoice(torch_default, "omp", f"OMP_NUM_THREADS={environ['OMP_NUM_THREADS']}")
    cores = usable_cores() if cores is None else cores
    load = busy_cores() if load is None else load
    free = max(1, min(torch_default, int(cores - load + 0.5)))
    if free == torch_default:
        return ThreadChoice(free, "load", f"{cores} cores, load {load:.1f}")
    return ThreadChoice(free, "load", f"load {load:.1f} from other jobs on {cores} cores")


def use_threads() -> ThreadChoice:
    """Choose the thread count for this process (`choose_threads`), set it in torch, return it."""
    import torch

    global _current
    choice = choose_threads(_requested, torch.get_num_threads())
    torch.set_num_threads(choice.threads)
    _current = choice
    return choice


def current_threads() -> int:
    """The count torch computes with now (recorded in checkpoints)."""
    import torch

    return torch.get_num_threads()


def follow_recorded(recorded: int | None) -> str | None:
    """On resume: take the run's recorded thread count unless the user named one, so that the
    resumed run repeats the uninterrupted one bit for bit. Returns a line for the user when the
    count changes or differs, None otherwise."""
    import torch

    global _current
    now = torch.get_num_threads()
    if recorded is None or recorded == now:
        return None
    if _current is not None and _current.explicit:
        return (
            f"threads: {now} as asked, but the run was started with {recorded}: "
            "the resumed run repeats it only to float round-off"
        )
    torch.set_num_threads(recorded)
    _current = ThreadChoice(recorded, "recorded", "the count the run was started with")
    return f"threads: {recorded}, the count the run was started with (so that it repeats bit for bit)"


__all__ = [
    "ENV_VAR",
    "ThreadChoice",
    "choose_threads",
    "current_threads",
    "follow_recorded",
    "request_threads",
    "use_threads",
]
