"""`python run.py stage=eval` end to end on the untrained tiny model and synthetic data."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NO_PERCEPTION = "++model.perception=null"  # the random tower: no perception pretraining (3.5 min)


def run_app(*overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *overrides, NO_PERCEPTION],
                          cwd=cwd, capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    proc = run_app("stage=eval", "experiment=tiny_smoke", "stage.max_per_task=5",
                   "data.sources.synthetic.n_per_task=60", "decoding.max_new_tokens=24",
                   f"paths.cache={tmp / 'cache'}", f"hydra.run.dir={tmp / 'run'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run", proc


def test_eval_writes_predictions_metrics_and_plot(eval_run):
    run_dir, proc = eval_run
    rows = list(csv.DictReader((run_dir / "predictions.csv").open()))
    assert len(rows) == 15 and {r["task"] for r in rows} == {"technical", "aesthetic", "alignment"}
    assert set(rows[0]) >= {"id", "task", "prompt", "mos", "response", "score_greedy",
                            "score_expectation"}  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    pooled = {r["task"]: r for r in metrics["greedy"] if r["dataset"] == "all"}
    assert set(pooled) == {"technical", "aesthetic", "alignment"}
    assert all(r["n"] == 5 and 0.0 <= r["parse_rate"] <= 1.0 for r in pooled.values())
    assert (run_dir / "scatter.png").stat().st_size > 1000
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert "read-out: greedy" in proc.stdout and "SRCC" in proc.stdout
    assert list((run_dir / "logs").rglob("metrics.csv"))


def test_bad_config_names_the_culprit(tmp_path):
    proc = run_app("stage=evl", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0 and "evl" in proc.stderr
    proc = run_app("data=koniq", f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1 and "nowhere" in proc.stderr
    assert "Traceback" not in proc.stderr  # one line a user can act on
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    unset = run_app("data=koniq", f"hydra.run.dir={tmp_path}")  # data.root left at ???
    assert unset.returncode == 1 and "Traceback" not in unset.stderr
    assert "Missing mandatory value: data.root" in unset.stderr.strip().splitlines()[-1]
    debug = run_app("data=koniq", f"data.root={tmp_path / 'nowhere'}", "debug=true",
                    f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "DataError" in debug.stderr


def test_a_capped_evaluation_samples_the_whole_split():
    """stage.max_per_task takes a seeded random sample of each task's split, not its first or
    evenly spaced records (a split stored by content, as KADID-10k by reference image,
    distortion and level, would lose most images or all but one level)."""
    from omniquality_r.data.records import Record
    from omniquality_r.stages.common import sample_per_task

    def rec(i, task):
        return Record(id=f"{task}/{i}", image="x.png", task=task, mos=1.0, mos_raw=1.0,
                      dataset="d")  # fmt: skip

    levels = [rec(i, "technical") for i in range(400)] + [rec(i, "alignment") for i in range(3)]
    kept = sample_per_task(levels, 100)
    tech = [int(r.id.split("/")[1]) for r in kept if r.task == "technical"]
    assert len(tech) == 100 and tech == sorted(tech)  # the split's order is kept
    assert {i // 100 for i in tech} == {0, 1, 2, 3}  # every "photograph" ...
    # ... and, within each, every "level" of a period-4 layout (evenly spaced picks, one per
    # 4 records, keep the same level for 33 picks in a row: 2 levels per photograph)
    assert all({i % 4 for i in tech if i // 100 == p} == {0, 1, 2, 3} for p in range(4))
    assert [r.id for r in kept if r.task == "alignment"] == [f"alignment/{i}" for i in range(3)]
    assert sample_per_task(levels, 100) == kept and sample_per_task(levels, None) == levels
