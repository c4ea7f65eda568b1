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
from ..inference import PromptSpec, ScoredBatch, score_items, summarize
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
    samples: int = 1,
    batch_size: int = 16,
    desc: str | None = "eval",
) -> tuple[list[dict], list[str]]:
    """One row per readable record (PREDICTION_COLUMNS + `score_<readout>`), and the
    messages of records skipped because their image could not be read. With `samples` > 1
    answers per record (a sampling `generation`) a row sums up its answers (item_answers).
    `desc` labels the progress bar (None: no bar)."""
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
            generation=generation, readouts=readouts, samples=samples,
        )  # fmt: skip
        rows += [{"id": rec.id, "task": rec.task, "dataset": rec.dataset, "prompt": rec.prompt,
                  "mos": rec.mos, **item_answers(out, i, readouts)}
                 for i, rec in enumerate(batch)]  # fmt: skip
    model.train(was_training)
    return rows, skipped


def item_answers(out: ScoredBatch, item: int, readouts: Sequence[str]) -> dict:
    """Item `item`'s prediction columns from its answers: the first answer's response; valid
    when any answer is (else the first answer's reason); looped when any answer looped; per
    read-out the mean score of the valid answers (inference.summarize)."""
    answers = out.answers_of(item)
    invalid = out.invalid[answers]
    return {"response": out.responses[answers][0],
            "invalid": "" if "" in invalid else invalid[0],
            "looped": any(out.looped[answers]),
            **{f"score_{r}": summarize(out.scores[r][answers])[0] for r in readouts}}  # fmt: skip


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
