"""One function per stage, chosen by `stage.name`. Config objects stop here: below this
package every function takes plain arguments. common.py builds what stages share, one module
per stage, pipeline.py runs them in order."""

from __future__ import annotations

import json
from collections.abc import Callable

from hydra.core.hydra_config import HydraConfig
from lightning import seed_everything
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from transformers.utils import logging as hf_logging

from ..console import single_log_lines
from ..eval.evaluate import json_safe
from ..settings import ConfigError
from .benchmark import benchmark_stage
from .common import output_dir
from .pipeline import STEP_STAGES, pipeline_stage
from .score import score_stage, select_stage

STAGES: dict[str, Callable[[DictConfig], dict]] = {
    "pipeline": pipeline_stage, **STEP_STAGES, "score": score_stage, "select": select_stage,
    "benchmark": benchmark_stage,
}  # fmt: skip  (the pipeline's steps, and the stages it does not run)


def run_stage(cfg: DictConfig) -> dict:
    name = cfg.stage.name
    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r}; expected one of {sorted(STAGES)}")
    hf_logging.disable_progress_bar()
    single_log_lines()
    seed_everything(cfg.seed, workers=True)
    metrics = STAGES[name](cfg)
    write_job_summary(cfg, metrics)
    return metrics


@rank_zero_only
def write_job_summary(cfg: DictConfig, metrics: dict) -> None:
    """<run dir>/job_summary.json: the job's overrides and its stage's metrics, the one file
    that every job of a sweep (multirun/<time>/<job num>/) leaves for a later collector."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    summary = {"stage": cfg.stage.name, "overrides": overrides, "metrics": json_safe(metrics)}
    text = json.dumps(summary, indent=2, default=str)  # default: stray tensors, paths
    (output_dir(cfg) / "job_summary.json").write_text(text)
