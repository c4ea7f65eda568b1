"""stage=eval: generate on a split and report SRCC/PLCC per task and dataset."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from ..data.records import from_row
from ..eval.evaluate import flat_metrics, predict, print_tables, write_report
from .common import (
    answer_generation,
    configured_model,
    data_splits,
    instructions_of,
    log_metrics,
    output_dir,
    sample_per_task,
)

log = logging.getLogger(__name__)


def evaluate_split(cfg: DictConfig, model, processor, data: DictConfig, out: Path,
                   generation: dict) -> dict:  # fmt: skip
    """Scores of `model` on `data`'s stage.split (stage.max_per_task records per task at
    most; stage.samples answers per record drawn with `generation`, their mean the score):
    predictions.csv, metrics.json and scatter.png in `out`; the metric rows per read-out
    (eval/evaluate.write_report). Callers take `generation` from answer_generation before
    they load a model, so a wrong setting fails at once."""
    records = [from_row(r) for r in data_splits(cfg, data)[cfg.stage.split]]
    records = sample_per_task(records, cfg.stage.max_per_task)
    readouts = list(cfg.stage.readouts)
    rows, skipped = predict(
        model, processor, records,
        instructions=instructions_of(cfg), system_prompt=cfg.system_prompt,
        generation=generation, readouts=readouts, samples=cfg.stage.samples,
        batch_size=cfg.stage.batch_size,
    )  # fmt: skip
    if skipped:
        log.warning("%d records skipped (unreadable images); see %s", len(skipped),
                    out / "metrics.json")  # fmt: skip
    return write_report(rows, skipped, out, readouts)


def eval_stage(cfg: DictConfig) -> dict:
    """Generate on the evaluation split and report SRCC/PLCC/KRCC/RMSE per task and dataset."""
    out = output_dir(cfg)
    generation = answer_generation(cfg)
    model, processor = configured_model(cfg)
    metrics = evaluate_split(cfg, model, processor, cfg.data, out, generation)
    print_tables(metrics)
    log_metrics(cfg, flat_metrics(metrics, prefix=cfg.stage.split))
    log.info("eval report written to %s", out)
    return metrics
