"""One function per stage, chosen by `stage.name`. Config objects stop here:
below this module every function takes plain arguments."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning import seed_everything
from omegaconf import DictConfig, OmegaConf
from transformers.utils import logging as hf_logging

from .data.build import build_splits
from .data.records import Record, from_row
from .eval.evaluate import flat_metrics, predict, print_tables, write_report
from .models.loading import load_model, resolve_model_path

log = logging.getLogger(__name__)


def output_dir(cfg: DictConfig) -> Path:
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def device_of(trainer: DictConfig) -> torch.device:
    wants_gpu = trainer.accelerator in ("gpu", "cuda") or (
        trainer.accelerator == "auto" and torch.cuda.is_available()
    )
    return torch.device("cuda" if wants_gpu else "cpu")


def instructions_of(cfg: DictConfig) -> dict[str, str]:
    """Task name -> instruction, for the tasks selected by `task=[...]`."""
    return {name: task.instruction for name, task in cfg.task.items()}


def data_splits(cfg: DictConfig):
    return build_splits(
        OmegaConf.to_container(cfg.data.sources, resolve=True),
        list(cfg.task),
        seed=cfg.data.split.seed,
        val=cfg.data.split.val,
        test=cfg.data.split.test,
    )


def configured_model(cfg: DictConfig, path: str | None = None):
    """The configured model (or the checkpoint at `path`) and its processor."""
    m = cfg.model
    spec = OmegaConf.to_container(m.spec, resolve=True) if m.spec else None
    resolved = resolve_model_path(m.name, path or m.path,
                                  str(Path(cfg.paths.cache) / "models"), spec)  # fmt: skip
    model, processor = load_model(
        resolved, dtype=m.dtype, attn_implementation=m.attn_implementation,
        gradient_checkpointing=m.gradient_checkpointing, min_pixels=m.min_pixels,
        max_pixels=m.max_pixels,
    )  # fmt: skip
    return model.to(device_of(cfg.trainer)), processor


def first_per_task(records: list[Record], limit: int | None) -> list[Record]:
    if limit is None:
        return records
    seen: dict[str, int] = {}
    kept = []
    for r in records:
        seen[r.task] = seen.get(r.task, 0) + 1
        if seen[r.task] <= limit:
            kept.append(r)
    return kept


def log_metrics(cfg: DictConfig, metrics: dict[str, float]) -> None:
    """Send metrics to the configured Lightning logger and close it (wandb: one run per job)."""
    logger = instantiate(cfg.logger)
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    logger.log_metrics(metrics)
    logger.finalize("success")
    if type(logger).__name__ == "WandbLogger":
        import wandb

        wandb.finish()


def eval_stage(cfg: DictConfig) -> dict:
    """Generate on the evaluation split and report SRCC/PLCC/KRCC/RMSE per task and dataset."""
    out = output_dir(cfg)
    records = [from_row(r) for r in data_splits(cfg)[cfg.stage.split]]
    records = first_per_task(records, cfg.stage.max_per_task)
    model, processor = configured_model(cfg)
    readouts = list(cfg.stage.readouts)
    rows, skipped = predict(
        model, processor, records,
        instructions=instructions_of(cfg), system_prompt=cfg.system_prompt,
        generation=OmegaConf.to_container(cfg.decoding, resolve=True),
        readouts=readouts, batch_size=cfg.stage.batch_size,
    )  # fmt: skip
    metrics = write_report(rows, skipped, out, readouts)
    print_tables(metrics)
    if skipped:
        log.warning("%d records skipped (unreadable images); see metrics.json", len(skipped))
    log_metrics(cfg, flat_metrics(metrics, prefix=cfg.stage.split))
    log.info("eval report written to %s", out)
    return metrics


STAGES: dict[str, Callable[[DictConfig], dict]] = {
    "eval": eval_stage,
}


def run_stage(cfg: DictConfig) -> dict:
    name = cfg.stage.name
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {sorted(STAGES)}")
    hf_logging.disable_progress_bar()
    seed_everything(cfg.seed, workers=True)
    return STAGES[name](cfg)
