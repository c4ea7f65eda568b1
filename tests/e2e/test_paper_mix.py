"""data=paper_mix end to end: the paper's three training sets (AVA, EvalMuse-40K, KonIQ-10k) in
their native layouts (tests/data/fixtures.py), through cot (the analyst fitted on their
training split), SFT and GRPO on the untrained tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "data"))
import fixtures  # noqa: E402

TASK_OF = {"ava": "aesthetic", "evalmuse": "alignment", "koniq": "technical"}


def run_app(tmp: Path, name: str, *overrides: str) -> Path:
    roots = [f"data.sources.{d}.root={getattr(fixtures, f'write_{d}')(tmp / d, 30)}"
             for d in TASK_OF]  # fmt: skip
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "data=paper_mix", *roots,
                           "++model.perception=null", f"paths.cache={tmp / 'cache'}",
                           f"hydra.run.dir={tmp / name}", *overrides],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("paper_mix")
    cot = run_app(tmp, "cot", "stage=cot", "stage.k=4", "stage.epsilon=1.0")
    sft = run_app(tmp, "sft", "stage=sft", f"stage.cot_path={cot / 'cot.jsonl'}",
                  "stage.max_steps=2", "stage.micro_batch=4", "stage.global_batch=4",
                  "stage.val.every_n_steps=2", "stage.val.max_per_task=1",
                  "decoding.max_new_tokens=8")  # fmt: skip
    grpo = run_app(tmp, "grpo", "stage=grpo", f"init_from={sft}", "stage.max_rollouts=1",
                   "stage.val_check_interval=1", "stage.val_per_task=1",
                   "algo.prompts_per_step=3", "algo.group_size=2", "algo.train_batch_size=6",
                   "algo.micro_batch_prompts=3", "algo.generation.max_new_tokens=8",
                   "decoding.max_new_tokens=8")  # fmt: skip
    return {"cot": cot, "sft": sft, "grpo": grpo}


def test_paper_mix_trains_through_cot_sft_and_grpo(runs):
    stats = json.loads((runs["cot"] / "cot_stats.json").read_text())
    seen = {(a["dataset"], a["task"]) for a in stats["acceptance"] if a["split"] == "train"}
    assert {(d, t) for d, t in TASK_OF.items()} <= seen  # each dataset with its own task
    assert set(stats["teacher_fit"]) == set(TASK_OF.values()) and stats["written"] > 0
    sft = json.loads((runs["sft"] / "checkpoint" / "train_summary.json").read_text())
    assert sft["steps"] == 2 and sft["skipped"] == 0
    grpo = json.loads((runs["grpo"] / "checkpoint" / "train_summary.json").read_text())
    assert grpo["rollouts"] == 1 and grpo["completions"] == 6 and grpo["skipped_images"] == 0
