"""stage=benchmark: checkpoints x dataset configs -> one table, as every IQA paper reports.

Each checkpoint is loaded once and scored on the `stage.split` of every dataset in
`stage.datasets` (data nodes, each a conf/data file: `+data@stage.datasets.<name>=<file>`).
Rows: checkpoint, data config, dataset, task, read-out, n, parse rate, SRCC, PLCC, PLCC after
the 4-parameter logistic fit (SRCC is rank-based: the fit cannot change it). Written as
benchmark.md (SRCC / PLCC per checkpoint and dataset), benchmark.csv and benchmark.json (every
row); each cell's predictions under <run>/<checkpoint>/<data>/.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from ..eval.evaluate import json_safe
from ..eval.metrics import POOLED
from ..settings import ConfigError
from .common import CHECKPOINT, answer_generation, configured_model, log_metrics, output_dir
from .eval import evaluate_split
from .pipeline import TRAINED_STEPS

log = logging.getLogger(__name__)

COLUMNS = ("checkpoint", "data", "dataset", "task", "readout", "n", "parse_rate", "srcc", "plcc",
           "plcc_logistic")  # fmt: skip


def benchmark_checkpoints(stage: DictConfig) -> dict[str, str | None]:
    """Label -> checkpoint folder: stage.checkpoints, then the trained steps of the pipeline
    run in stage.run_dir (sft, grpo_stage1, grpo_stage2: those it has finished); with
    neither, the configured model (init_from or model.path) as "model" (path None)."""
    checkpoints = {str(k): str(v) for k, v in (stage.checkpoints or {}).items()}
    if stage.run_dir:
        run = Path(stage.run_dir)
        found = [s for s in TRAINED_STEPS if (run / s / CHECKPOINT / "config.json").is_file()]
        if not found:
            looked = ", ".join(f"{s}/{CHECKPOINT}" for s in TRAINED_STEPS)
            raise ConfigError(f"stage.run_dir={run}: no trained step with a checkpoint "
                              f"(looked for {looked})")  # fmt: skip
        for step in found:
            checkpoints.setdefault(step, str(run / step))
    for label, path in checkpoints.items():
        if not Path(path).is_dir():
            raise ConfigError(f"stage.checkpoints.{label}: {path} is not a folder")
    return checkpoints or {"model": None}


def benchmark_rows(checkpoint: str, data: str, metrics: dict[str, list[dict]]) -> list[dict]:
    """One row per read-out, task and dataset (the per-task pooled rows left out)."""
    return [{"checkpoint": checkpoint, "data": data, "readout": readout,
             **{k: row[k] for k in COLUMNS if k in row}}
            for readout, rows in metrics.items()
            for row in rows if row["dataset"] != POOLED]  # fmt: skip


def _cell(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def markdown_table(rows: list[dict]) -> str:
    """Per read-out: a row per checkpoint, a column per (data config, dataset, task) headed
    `<data> <task>` (`<data>/<dataset> <task>` where they differ), cells SRCC / PLCC."""
    blocks = []
    for readout in dict.fromkeys(r["readout"] for r in rows):
        mine = [r for r in rows if r["readout"] == readout]
        columns = list(dict.fromkeys((r["data"], r["dataset"], r["task"]) for r in mine))
        cells = {(r["checkpoint"], r["data"], r["dataset"], r["task"]): r for r in mine}
        heads = [f"{c if c == d else f'{c}/{d}'} {t}" for c, d, t in columns]
        lines = [f"read-out: {readout}, cells SRCC / PLCC (parse rate)", "",
                 "| checkpoint | " + " | ".join(heads) + " |",
                 "|---" * (len(columns) + 1) + "|"]  # fmt: skip
        for ckpt in dict.fromkeys(r["checkpoint"] for r in mine):
            row = [cells.get((ckpt, *column)) for column in columns]
            lines.append(f"| {ckpt} | " + " | ".join(
                "-" if c is None else
                f"{_cell(c['srcc'])} / {_cell(c['plcc'])} ({c['parse_rate']:.2f})"
                for c in row) + " |")  # fmt: skip
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def write_benchmark(rows: list[dict], out: Path) -> str:
    """benchmark.md, benchmark.csv and benchmark.json in `out`; returns the markdown."""
    table = markdown_table(rows)
    (out / "benchmark.md").write_text(table + "\n")
    with (out / "benchmark.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "benchmark.json").write_text(json.dumps(json_safe(rows), indent=2))
    return table


def benchmark_stage(cfg: DictConfig) -> dict:
    """Every checkpoint on every dataset's stage.split: one table, logged as
    benchmark/<checkpoint>/<data>/<readout>/<task>/<dataset>/<metric>."""
    if not cfg.stage.datasets:
        raise ConfigError("stage.datasets is empty: add one, e.g. +data@stage.datasets.koniq="
                          "koniq stage.datasets.koniq.root=/data/koniq")  # fmt: skip
    out = output_dir(cfg)
    generation = answer_generation(cfg)
    rows: list[dict] = []
    for label, path in benchmark_checkpoints(cfg.stage).items():
        model, processor = configured_model(cfg, path=path)
        for data, node in cfg.stage.datasets.items():
            log.info("benchmark: %s on %s (%s split)", label, data, cfg.stage.split)
            metrics = evaluate_split(cfg, model, processor, node, out / label / str(data),
                                     generation)  # fmt: skip
            rows.extend(benchmark_rows(label, str(data), metrics))
        del model
    table = write_benchmark(rows, out)
    print(table)
    log_metrics(cfg, {"/".join(["benchmark", *(str(r[k]) for k in COLUMNS[:5]), m]): float(r[m])
                      for r in rows for m in COLUMNS[5:] if r[m] is not None})  # fmt: skip
    log.info("benchmark written to %s", out / "benchmark.md")
    return {"rows": rows}
