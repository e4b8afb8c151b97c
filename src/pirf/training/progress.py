"""A progress bar for training loops (rich), a no-op when disabled or on non-main ranks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None, start: int) -> None:
        self.progress, self.task, self.start, self.t0 = progress, task, start, time.perf_counter()

    def update(self, completed: int, **metrics: float) -> None:
        if self.progress is None:
            return
        rate = (completed - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        text = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()) + f"  {rate:.2f} it/s"
        self.progress.update(self.task, completed=completed, metrics=text)

    def note(self, text: str) -> None:
        """Say what the loop does between updates (an evaluation that holds the bar still)."""
        if self.progress is not None:
            self.progress.update(self.task, metrics=text)


@contextlib.contextmanager
def progress_bar(enabled: bool, description: str, total: int, start: int = 0) -> Iterator[_Bar]:
    """``with progress_bar(True, "pretrain", steps) as bar: ... bar.update(step, loss=...)``."""
    if not enabled:
        yield _Bar(None, None, start)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[metrics]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task(description, total=total, completed=start, metrics="")
        yield _Bar(progress, task, start)
