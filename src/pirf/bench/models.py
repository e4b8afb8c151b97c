"""The models a bench trains: the GPU-scale base model, PIDM, PG-Diffusion, PIRF and its ablations.

Each lives in ``<out>/models/<benchmark>/<row>/`` as an ordinary pirf run folder. A finished run
(``model.safetensors`` present) whose ``config.json`` matches the config the bench would run now
is reused; an unfinished one (a ``checkpoints/latest`` without the model) is resumed; a finished
run of another config is an error (the table would mix settings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pirf.bench.config import ABLATIONS, FAMILY, BenchConfig
from pirf.config import load_config, read_yaml, resolve_config, to_dict
from pirf.errors import ConfigError
from pirf.finetune import finetune
from pirf.finetune.config import FinetuneConfig, resolve_finetune_config, with_model_defaults
from pirf.models.checkpoint import recover_checkpoint
from pirf.training.config import PretrainConfig
from pirf.training.pretrain import pretrain

PRETRAIN_PREFIX = "pretrain:"


def model_dir(cfg: BenchConfig, benchmark: str, row: str) -> Path:
    return Path(cfg.out) / "models" / benchmark / row


def _with_defaults(held: Any, defaults: Any) -> Any:
    """``held`` with every key it lacks (at any depth) taken from ``defaults``: a run written before
    pirf added a setting held that setting's default."""
    if not isinstance(held, dict) or not isinstance(defaults, dict):
        return held
    return {
        k: _with_defaults(held[k], defaults.get(k)) if k in held else defaults[k] for k in defaults | held
    }


def _state(run_dir: Path, config: Any) -> str:
    """ "done" (reuse), "partial" (resume) or "new" (start) for a run folder and the config (a
    config dataclass) it should hold. A model or checkpoint whose save was killed between its
    two renames is completed first (`recover_checkpoint`), so it is judged by what it holds."""
    if recover_checkpoint(run_dir / "model"):
        if isinstance(config, FinetuneConfig):  # the run recorded what its base model decided
            config = with_model_defaults(config)
        wanted = json.loads(json.dumps(to_dict(config)))
        held = (
            json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else None
        )
        defaults = json.loads(json.dumps(to_dict(type(config)())))
        if _with_defaults(held, defaults) != wanted:
            raise ConfigError(
                f"{run_dir} holds a finished run of another config than this bench's",
                "remove that folder to retrain it, or give the bench another out",
            )
        return "done"
    return "partial" if recover_checkpoint(run_dir / "checkpoints" / "latest") else "new"


def base_spec(cfg: BenchConfig, benchmark: str, progress: bool = True) -> str:
    """The base model of ``benchmark``: ``cfg.base`` with ``{benchmark}`` filled in; a
    ``pretrain:<config>`` spec is trained here first (the GPU scale has no shipped models)."""
    spec = cfg.base.format(benchmark=benchmark)
    if not spec.startswith(PRETRAIN_PREFIX):
        return spec
    run_dir = model_dir(cfg, benchmark, "base")
    config_path = resolve_config("pretrain", spec[len(PRETRAIN_PREFIX) :])
    pre = load_config(PretrainConfig, config_path, [f"out={run_dir}"])
    state = _state(run_dir, pre)
    if state != "done":
        pretrain(pre, resume=state == "partial", progress=progress)
    return str(run_dir / "model.safetensors")


def finetune_config(cfg: BenchConfig, benchmark: str, row: str, base: str) -> FinetuneConfig:
    """The fine-tune config of ``row`` (``pirf``, an ablation or a family row) on ``benchmark``:
    the benchmark's fine-tune config (or ``cfg.finetune_config``) for the row's method, the
    bench's overrides, then the ablation's or family row's."""
    config = cfg.finetune_config.format(benchmark=benchmark) or None
    method, extra = FAMILY.get(row, ("pirf", ABLATIONS.get(row, ())))
    overrides = [*cfg.finetune_overrides, *extra, f"out={model_dir(cfg, benchmark, row)}"]
    if config is None and base != benchmark:
        raise ConfigError(
            f"the bench's base model for {benchmark} is {base}, but no fine-tune config is named",
            "set finetune_config (e.g. '{benchmark}-gpu') so PIRF's settings fit that model",
        )
    return resolve_finetune_config(base, method, config, overrides)


def finetuned_model(cfg: BenchConfig, benchmark: str, row: str, base: str, progress: bool = True) -> Path:
    """The fine-tuned model file of a PIRF row, trained (or resumed) if needed."""
    ft = finetune_config(cfg, benchmark, row, base)
    state = _state(Path(ft.out), ft)
    if state != "done":
        finetune(ft, resume=state == "partial", progress=progress)
    return Path(ft.out) / "model.safetensors"


def _continued(
    cfg: BenchConfig, benchmark: str, row: str, base: str, base_record: dict[str, Any], settings: dict
) -> PretrainConfig:
    """A training-based baseline's run: the base model's own training data, continued from its
    weights with ``settings`` (the row's loss, steps, batch size, learning rate, warm-up)."""
    data = dict(base_record.get("config", {}).get("data") or {})
    if not data:
        shipped = read_yaml(resolve_config("pretrain", benchmark))
        data = shipped.get("data", {})
    steps, batch_size = settings["steps"], settings["batch_size"]
    settings = {
        "data": data,
        "out": str(model_dir(cfg, benchmark, row)),
        "init": base,
        "ema_halflife_samples": float(steps * batch_size) / 4,
        "checkpoint_every": max(1, steps // 10),
        "log_every": max(1, steps // 50),
        "seed": 1,
        **settings,
    }
    return load_config(PretrainConfig, None, (), base=settings)


def pidm_config(cfg: BenchConfig, benchmark: str, base: str, base_record: dict[str, Any]) -> PretrainConfig:
    """PIDM's run: the base model's own training data, continued from its weights with the
    physics-informed loss (`pirf.training.pidm`) and the bench's PIDM settings."""
    p = cfg.pidm
    settings = {
        "physics_weight": p.weight_for(benchmark),
        "steps": p.steps,
        "batch_size": p.batch_size,
        "lr": p.lr,
        "warmup_steps": p.warmup_steps,
    }
    return _continued(cfg, benchmark, "pidm", base, base_record, settings)


def pgdiffusion_config(
    cfg: BenchConfig, benchmark: str, base: str, base_record: dict[str, Any]
) -> PretrainConfig:
    """PG-Diffusion's run: the base model's own training data, continued from its weights with a
    physics-guide path (warm-started to equal the base at first) and guide dropout
    (`pirf.training.pgdiffusion`), with the bench's PG-Diffusion settings."""
    p = cfg.pgdiffusion
    settings = {
        "physics_guide": True,
        "guide_dropout": p.guide_dropout,
        "steps": p.steps,
        "batch_size": p.batch_size,
        "lr": p.lr,
        "warmup_steps": p.warmup_steps,
    }
    return _continued(cfg, benchmark, "pgdiffusion", base, base_record, settings)


CONTINUED = {"pidm": pidm_config, "pgdiffusion": pgdiffusion_config}
"""The training-based baselines a bench trains by continuing the base model (`continued_model`)."""


def continued_model(
    cfg: BenchConfig, benchmark: str, row: str, base: str, base_record: dict[str, Any], progress: bool = True
) -> Path:
    """The model file of a training-based baseline row (``pidm``, ``pgdiffusion``) for
    ``benchmark``, trained (or resumed) if needed."""
    pre = CONTINUED[row](cfg, benchmark, base, base_record)
    state = _state(Path(pre.out), pre)
    if state != "done":
        pretrain(pre, resume=state == "partial", progress=progress)
    return Path(pre.out) / "model.safetensors"


def pidm_model(
    cfg: BenchConfig, benchmark: str, base: str, base_record: dict[str, Any], progress: bool = True
) -> Path:
    """PIDM's model file for ``benchmark``, trained (or resumed) if needed."""
    return continued_model(cfg, benchmark, "pidm", base, base_record, progress)


__all__ = [
    "CONTINUED",
    "base_spec",
    "continued_model",
    "finetune_config",
    "finetuned_model",
    "model_dir",
    "pgdiffusion_config",
    "pidm_config",
    "pidm_model",
]
