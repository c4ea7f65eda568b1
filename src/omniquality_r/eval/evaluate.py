"""Predict scores for records and write the evaluation report.

`predict` runs the shared prediction function (inference.score_items) batch by batch;
`write_report` turns its rows into predictions.csv, metrics.json and
scatter.png and returns the metric rows per read-out.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from ..console import progress
from ..data.records import Record, load_readable
from ..inference import PromptSpec, score_items
from .metrics import format_table, grouped_metrics
from .plots import scatter_plot

# invalid: why the answer is not a score (prompts.INVALID; "" when valid); looped: the
# repetition guard stopped the generation (inference.RepetitionStop).
PREDICTION_COLUMNS = ("id", "task", "dataset", "prompt", "mos", "response", "invalid", "looped")


def predict(
    model,
    processor,
    records: Sequence[Record],
    *,
    instructions: dict[str, str],
    system_prompt: str,
    generation: dict,
    readouts: Sequence[str] = ("greedy",),
    batch_size: int = 16,
    desc: str | None = "eval",
) -> tuple[list[dict], list[str]]:
    """One row per readable record (PREDICTION_COLUMNS + `score_<readout>`), and the
    messages of records skipped because their image could not be read. `desc` labels the
    progress bar (None: no bar)."""
    rows, skipped = [], []
    was_training = model.training
    model.eval()
    for start in progress(range(0, len(records), batch_size), desc=desc, unit="batch"):
        batch, images, unreadable = load_readable(records[start : start + batch_size])
        skipped.extend(unreadable)
        if not batch:
            continue
        items = [PromptSpec(im, r.task, r.prompt) for r, im in zip(batch, images)]
        out = score_items(
            model, processor, items, instructions=instructions, system_prompt=system_prompt,
            generation=generation, readouts=readouts,
        )  # fmt: skip
        for i, rec in enumerate(batch):
            row = {"id": rec.id, "task": rec.task, "dataset": rec.dataset, "prompt": rec.prompt,
                   "mos": rec.mos, "response": out.responses[i], "invalid": out.invalid[i],
                   "looped": out.looped[i]}  # fmt: skip
            row.update({f"score_{r}": out.scores[r][i] for r in readouts})
            rows.append(row)
    model.train(was_training)
    return rows, skipped


def metric_rows(rows: Sequence[dict], readout: str) -> list[dict]:
    return grouped_metrics(
        [r[f"score_{readout}"] for r in rows],
        [r["mos"] for r in rows],
        [r["task"] for r in rows],
        [r["dataset"] for r in rows],
        invalid=[r["invalid"] for r in rows],
        looped=[r["looped"] for r in rows],
    )


def json_safe(value):
    """`value` with non-finite floats as None, so metrics.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_report(
    rows: Sequence[dict], skipped: Sequence[str], out_dir: str | Path, readouts: Sequence[str]
) -> dict[str, list[dict]]:
    """Write predictions.csv, metrics.json, scatter.png; return metric rows per read-out."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = [*PREDICTION_COLUMNS, *(f"score_{r}" for r in readouts)]
    with (out / "predictions.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    metrics = {r: metric_rows(rows, r) for r in readouts}
    (out / "metrics.json").write_text(
        json.dumps(json_safe({"metrics": metrics, "skipped": list(skipped)}), indent=2)
    )
    scatter_plot(rows, readouts, out / "scatter.png")
    return metrics


def print_tables(metrics: dict[str, list[dict]]) -> str:
    text = "\n\n".join(f"read-out: {r}\n{format_table(rows)}" for r, rows in metrics.items())
    print(text)
    return text


def flat_metrics(metrics: dict[str, list[dict]], prefix: str = "test") -> dict[str, float]:
    """`{prefix}/{readout}/{task}/{dataset}/{metric}` -> value, for loggers."""
    flat = {}
    for readout, rows in metrics.items():
        for row in rows:
            key = f"{prefix}/{readout}/{row['task']}/{row['dataset']}"
            flat.update({f"{key}/{k}": float(v) for k, v in row.items()
                         if k not in ("task", "dataset")})  # fmt: skip
    return flat
