"""`python run.py stage=sft` end to end on a small CoT file built from synthetic records."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from omniquality_r.data.records import assign_splits
from omniquality_r.data.synthetic import generate_synthetic
from omniquality_r.models.loading import load_model

ROOT = Path(__file__).resolve().parents[2]
NO_PERCEPTION = "++model.perception=null"  # the random tower: no perception pretraining (3.5 min)


def run_app(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *overrides, NO_PERCEPTION],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip


def write_cot(tmp: Path) -> tuple[Path, int]:
    """cot.jsonl with the cot stage's columns (plain reasoning, score = MOS); n train rows."""
    records = assign_splits(generate_synthetic(tmp / "syn", n_per_task=8), seed=0, val=0.25,
                            test=0.0)  # fmt: skip
    path = tmp / "cot.jsonl"
    with path.open("w") as f:
        for r in records:
            f.write(json.dumps({**asdict(r), "plan": "Look at the image.",
                                "reasoning": f"The {r.task} is judged.", "score": round(r.mos, 2),
                                "response": "", "teacher": "test"}) + "\n")  # fmt: skip
    return path, sum(r.split == "train" for r in records)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft")
    cot, n_train = write_cot(tmp)
    proc = run_app("stage=sft", f"stage.cot_path={cot}", "stage.epochs=1", "stage.micro_batch=4",
                   "stage.global_batch=8", "stage.val.every_n_steps=2", "stage.val.max_per_task=2",
                   "stage.log_every_n_steps=1", "decoding.max_new_tokens=24",
                   f"paths.cache={tmp / 'cache'}",
                   f"hydra.run.dir={tmp / 'run'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run", n_train


def test_sft_trains_validates_and_saves_a_loadable_checkpoint(sft_run):
    run_dir, n_train = sft_run
    summary = json.loads((run_dir / "checkpoint" / "train_summary.json").read_text())
    assert summary["steps"] == math.ceil(math.ceil(n_train / 4) / 2)  # accumulation 8 / 4
    assert summary["skipped"] == 0 and summary["samples"] == n_train
    expected = {"val/loss", "val/greedy/technical/all/srcc", "val/expectation/alignment/all/plcc"}
    assert expected <= set(summary["final"])
    rows = list(csv.DictReader(next((run_dir / "logs").rglob("metrics.csv")).open()))
    assert sum(bool(r["val/loss"]) for r in rows) == 2  # after step 2, and the final one
    assert any(r["train/loss"] for r in rows)
    model, processor = load_model(str(run_dir / "checkpoint"))
    assert model.config.model_type == "qwen2_5_vl" and processor.tokenizer.eos_token == "<|im_end|>"



def test_sft_on_one_task_of_a_three_task_cot_file_with_its_rows_repeated(tmp_path):
    """task=[alignment] keeps only the alignment rows of the file; repeat_per_task doubles them."""
    cot, _ = write_cot(tmp_path)
    rows = [json.loads(line) for line in cot.read_text().splitlines()]
    n_align = sum(r["split"] == "train" and r["task"] == "alignment" for r in rows)
    proc = run_app("stage=sft", "task=[alignment]", f"stage.cot_path={cot}", "stage.epochs=1",
                   "stage.micro_batch=4", "stage.global_batch=4", "stage.val.max_per_task=1",
                   "++stage.repeat_per_task.alignment=2", "decoding.max_new_tokens=8",
                   f"paths.cache={tmp_path / 'cache'}",
                   f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    left_out = "leaving out the CoT rows of task(s) ['aesthetic', 'technical']"
    assert left_out in proc.stderr + proc.stdout
    summary = json.loads((tmp_path / "run" / "checkpoint" / "train_summary.json").read_text())
    assert summary["samples"] == 2 * n_align and summary["steps"] == math.ceil(2 * n_align / 4)
