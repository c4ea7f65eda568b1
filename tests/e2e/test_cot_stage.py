"""`python run.py stage=cot` end to end: the analyst on synthetic data, and the `hf` teacher
(the tiny model, whose answers are never accepted) through the same stage."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from omniquality_r.data.records import RECORD_FIELDS
from omniquality_r.prompts import parse_trajectory

ROOT = Path(__file__).resolve().parents[2]
NO_PERCEPTION = "++model.perception=null"  # the random tower: no perception pretraining (3.5 min)


def run_cot(tmp: Path, name: str, *overrides: str) -> tuple[Path, subprocess.CompletedProcess]:
    """Run stage=cot on 30 synthetic records per task, cache shared under tmp."""
    run_dir = tmp / name
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), NO_PERCEPTION, "stage=cot",
         "data.sources.synthetic.n_per_task=30",
         f"paths.cache={tmp / 'cache'}", f"hydra.run.dir={run_dir}", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cot")


def test_analyst_writes_accepted_trajectories_and_stats(tmp):
    run_dir, proc = run_cot(tmp, "analyst", "stage.k=6", "stage.epsilon=0.5")
    rows = [json.loads(line) for line in (run_dir / "cot.jsonl").read_text().splitlines()]
    stats = json.loads((run_dir / "cot_stats.json").read_text())
    assert stats["teacher"] == "analyst" and stats["k"] == 6 and stats["skipped"] == 0
    assert stats["written"] == len(rows) and stats["written"] + stats["dropped"] == stats["records"]
    assert stats["records"] > 60 and len(rows) > 0.7 * stats["records"]
    assert {r["split"] for r in rows} == {"train", "val"}
    assert {r["task"] for r in rows} == {"technical", "aesthetic", "alignment"}
    for r in rows:
        assert set(RECORD_FIELDS) | {"plan", "reasoning", "score", "response", "teacher", "k",
                                     "n_accepted"} == set(r)  # fmt: skip
        assert abs(r["score"] - r["mos"]) <= 0.5 and 1 <= r["n_accepted"] <= 6
        assert parse_trajectory(r["response"]) == (r["plan"], r["reasoning"], r["score"])
    pooled = [a for a in stats["acceptance"] if a["dataset"] == "all"]
    assert {(a["split"], a["task"]) for a in pooled} == {
        (s, t) for s in ("train", "val") for t in ("technical", "aesthetic", "alignment")
    }
    assert sum(a["records"] for a in pooled) == stats["records"]
    assert all(0.2 < a["acceptance_rate"] < 0.9 for a in pooled if a["split"] == "train")
    assert "acceptance_rate" in proc.stdout and "dropped (no accepted trajectory)" in proc.stdout
    # the rubric was fitted on the training split; its own accuracy is reported per split
    assert set(stats["teacher_fit"]) == {"technical", "aesthetic", "alignment"}
    assert all(a["teacher_srcc"] > 0.5 for a in pooled if a["split"] == "train")


def test_hf_teacher_runs_through_the_stage(tmp):
    run_dir, _ = run_cot(tmp, "hf", "teacher=hf", "stage.k=2", "stage.max_per_task=2",
                         "stage.splits=[train]", "teacher.generation.max_new_tokens=8")  # fmt: skip
    stats = json.loads((run_dir / "cot_stats.json").read_text())
    (pooled,) = [
        a for a in stats["acceptance"] if (a["dataset"], a["task"]) == ("all", "technical")
    ]
    assert stats["teacher"] == "hf" and stats["records"] == 6
    assert pooled["records"] == 2 and pooled["trajectories"] == 4
    assert stats["written"] == len((run_dir / "cot.jsonl").read_text().splitlines())
