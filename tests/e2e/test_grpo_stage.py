"""`python run.py stage=grpo` end to end on the untrained tiny model and synthetic data."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grpo")
    overrides = ["stage=grpo", "++model.perception=null", f"paths.cache={tmp / 'cache'}",
                 f"hydra.run.dir={tmp / 'run'}", "data.sources.synthetic.n_per_task=4",
                 "stage.max_rollouts=2", "stage.val_check_interval=1", "stage.val_per_task=1",
                 "stage.sample_log_every=1", "algo.prompts_per_step=2", "algo.group_size=2",
                 "algo.train_batch_size=2", "algo.micro_batch_prompts=1",
                 "algo.generation.max_new_tokens=8", "decoding.max_new_tokens=8"]  # fmt: skip
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run", proc.stdout + proc.stderr


def test_grpo_counts_rollouts_and_optimiser_steps_apart(grpo_run):
    run, log = grpo_run
    summary = json.loads((run / "checkpoint" / "train_summary.json").read_text())
    # 2 rollouts of 2 prompts x 2 completions, 2 samples per optimiser step: 2 steps each
    assert summary["rollouts"] == 2 and summary["optimizer_steps"] == 4
    assert summary["completions"] == 8
    assert "GRPO: 2 rollouts of 2 prompts x 2, 2 optimiser steps each (train batch 2)" in log
    assert "rollouts: sampling, temperature=1.0, top_p=1.0, top_k=0" in log
    assert "repetition_penalty=1.0" in log and "validation: greedy, max_new_tokens=8" in log
    samples = [json.loads(x) for x in (run / "grpo_samples.jsonl").read_text().splitlines()]
    assert [s["rollout"] for s in samples] == [1] * 4 + [2] * 4
    (metrics,) = (run / "logs").glob("version_*/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    steps = {int(r["step"]): float(r["train/optimizer_step"]) for r in rows
             if r.get("train/optimizer_step")}  # fmt: skip
    assert steps == {0: 2.0, 1: 4.0}  # the log axis counts rollouts
    assert any(r.get("train/policy/clip_frac") for r in rows)
    val = [r for r in rows if any(k.endswith("/all/parse_rate") and v for k, v in r.items())]
    assert [int(r["step"]) for r in val] == [0, 1]  # validated after each rollout
