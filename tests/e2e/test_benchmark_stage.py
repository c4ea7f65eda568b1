"""`python run.py stage=benchmark`: checkpoints x datasets -> one table, on the untrained tiny
model (a pipeline run folder's sft step and a plain folder), the synthetic default's test split
and a manifest dataset used whole."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from omniquality_r.eval.metrics import quality_metrics
from omniquality_r.stages.benchmark import benchmark_rows, markdown_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory, tiny_path):
    tmp = tmp_path_factory.mktemp("benchmark")
    (tmp / "pipeline" / "sft").mkdir(parents=True)
    (tmp / "pipeline" / "sft" / "checkpoint").symlink_to(tiny_path)
    lines = []
    for i in range(6):  # a dataset with its own name and no split: used whole as a test set
        Image.new("RGB", (64, 64), (40 * i, 90, 200 - 30 * i)).save(tmp / f"p{i}.png")
        lines.append(json.dumps({"image": str(tmp / f"p{i}.png"), "task": "technical",
                                 "mos": 0.5 + 0.7 * i, "dataset": "photos"}))  # fmt: skip
    (tmp / "photos.jsonl").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([
        sys.executable, str(ROOT / "run.py"), "stage=benchmark", "experiment=tiny_smoke",
        "++model.perception=null", f"stage.run_dir={tmp / 'pipeline'}",
        f"+stage.checkpoints.untrained={tiny_path}", "stage.readouts=[greedy]",
        "stage.max_per_task=4",
        "+data@stage.datasets.photos=manifest",
        f"stage.datasets.photos.path={tmp / 'photos.jsonl'}",
        "stage.datasets.photos.split.val=0", "stage.datasets.photos.split.test=1",
        "decoding.max_new_tokens=16", f"paths.cache={tmp / 'cache'}",
        f"hydra.run.dir={tmp / 'run'}",
    ], cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run", proc


def test_benchmark_scores_every_checkpoint_on_every_dataset(benchmark_run):
    run, proc = benchmark_run
    rows = list(csv.DictReader((run / "benchmark.csv").open()))
    cells = {(r["checkpoint"], r["data"], r["dataset"], r["task"]) for r in rows}
    synthetic = {("synthetic", "synthetic", t) for t in ("aesthetic", "alignment", "technical")}
    photos = ("photos", "photos", "technical")
    expected = {(c, *d) for c in ("untrained", "sft") for d in {*synthetic, photos}}
    assert cells == expected and len(rows) == len(expected)
    for r in rows:  # each cell's figures are its own predictions' correlation
        preds = [p for p in csv.DictReader((run / r["checkpoint"] / r["data"] / "predictions.csv")
                                           .open()) if p["task"] == r["task"]]  # fmt: skip
        assert int(r["n"]) == len(preds) == 4  # stage.max_per_task; photos: 4 of its 6, all test
        own = quality_metrics([float(p["score_greedy"]) for p in preds],
                              [float(p["mos"]) for p in preds])  # fmt: skip
        for key in ("parse_rate", "srcc", "plcc", "plcc_logistic"):
            value = float(r[key]) if r[key] else math.nan
            assert value == own[key] or (math.isnan(value) and math.isnan(own[key])), key
    table = (run / "benchmark.md").read_text()
    assert table in proc.stdout and "| sft |" in table and "photos technical" in table
    assert json.loads((run / "benchmark.json").read_text())[0].keys() >= {"srcc", "plcc_logistic"}


def test_benchmark_names_a_missing_checkpoint(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "stage=benchmark",
                           f"stage.run_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"stage.run_dir={tmp_path}: no trained step" in proc.stderr


def test_markdown_table_puts_checkpoints_in_rows_and_datasets_in_columns():
    def metric(task, dataset, srcc):
        return {"task": task, "dataset": dataset, "n": 10, "parse_rate": 0.9, "srcc": srcc,
                "plcc": srcc / 2, "plcc_logistic": srcc, "krcc": 0.0, "rmse": 1.0}  # fmt: skip

    sft = [metric("technical", "koniq", 0.81), metric("technical", "all", 0.5)]
    rows = [*benchmark_rows("sft", "mix", {"greedy": sft}),
            *benchmark_rows("grpo", "livec", {"greedy": [metric("technical", "livec", 0.7)]})]
    assert [(r["checkpoint"], r["dataset"]) for r in rows] == [("sft", "koniq"), ("grpo", "livec")]
    assert "krcc" not in rows[0] and rows[0]["plcc_logistic"] == 0.81  # the pooled row left out
    assert markdown_table(rows).splitlines()[2:] == [
        "| checkpoint | mix/koniq technical | livec technical |", "|---|---|---|",
        "| sft | 0.810 / 0.405 (0.90) | - |", "| grpo | - | 0.700 / 0.350 (0.90) |"]
