"""A training run's folder, the same for pretraining and fine-tuning: start it, or resume it.

A run folder holds ``config.json`` (the settings it was started with), its logs (JSON lines) and
``checkpoints/`` (``latest``: everything to resume). The rule, for every kind of run:

- a new run writes ``config.json`` and empty logs, and refuses a folder that already holds a run's
  checkpoint (``--resume`` continues it);
- a resumed run first finishes checkpoint saves that were killed midway (`recover_checkpoint`),
  then refuses settings other than the run's own unless ``allow_change``, which records them
  (`check_resumed_config`); a run killed before its first checkpoint starts over;
- a resumed run drops the log lines written after its checkpoint (`rewind_logs`): it redoes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pirf.config import to_dict
from pirf.config.resume import check_resumed_config
from pirf.errors import DataFileError, OutputExistsError
from pirf.files import truncate_jsonl, write_json, write_text
from pirf.models.checkpoint import read_checkpoint_config, recover_checkpoint


def open_run_folder(
    run_dir: Path,
    cfg: Any,
    *,
    resume: bool,
    allow_change: bool,
    counter: str,
    logs: Sequence[str],
    what: str,
    also_recover: Sequence[str] = (),
    write: bool = True,
) -> bool:
    """Make ``run_dir`` ready for the run of ``cfg`` (a config dataclass) and say whether it
    resumes from ``checkpoints/latest``. ``counter`` is the record key of the run's progress
    (``step``, ``iteration``), ``logs`` the log files a new run starts empty, ``what`` names the
    run in errors ("a pretraining run"), ``also_recover`` other checkpoints to finish; ``write``
    False on processes other than the main one (they only read)."""
    for name in also_recover:
        recover_checkpoint(run_dir / "checkpoints" / name)
    latest = run_dir / "checkpoints" / "latest"
    has_checkpoint = recover_checkpoint(latest)
    if resume and has_checkpoint:
        at = int(read_checkpoint_config(latest).get(counter, 0))
        check_resumed_config(type(cfg), run_dir, cfg, allow_change=allow_change, at=at, write=write)
        return True
    if has_checkpoint:
        raise OutputExistsError(
            f"{run_dir} already holds {what}", "pass --resume to continue it, or choose another out"
        )
    if resume and not (run_dir / "config.json").exists():
        raise DataFileError(f"{run_dir} holds no {what} to resume", "start it without --resume")
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", to_dict(cfg))
        for name in logs:
            write_text(run_dir / name, "")
    return False


def rewind_logs(run_dir: Path, logs: Sequence[str], counter: str, at: int) -> None:
    """Keep the lines of each log in ``logs`` up to ``counter`` = ``at``, the checkpoint a run
    resumes from; what the run logged after it is redone (main process only)."""
    for name in logs:
        truncate_jsonl(run_dir / name, counter, at)


__all__ = ["open_run_folder", "rewind_logs"]
