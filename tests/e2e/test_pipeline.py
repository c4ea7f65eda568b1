"""`python run.py` (stage=pipeline) end to end at a tiny budget, then a rerun that skips."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from omniquality_r.settings import ConfigError
from omniquality_r.stages.pipeline import refuse_ignored_overrides

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("eval_untrained", "cot", "sft", "eval_sft", "grpo_stage1", "eval_grpo_stage1",
         "grpo_stage2", "eval_grpo_stage2")  # fmt: skip


def run_app(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip


@pytest.mark.slow
def test_pipeline_runs_every_step_then_skips_them(tmp_path):
    run = tmp_path / "run"
    small = [
        f"paths.cache={tmp_path / 'cache'}", f"hydra.run.dir={run}", "++model.perception=null",
        "data.sources.synthetic.n_per_task=24", "stage.eval.max_per_task=3",
        "stage.cot.k=2", "stage.sft.max_steps=2", "stage.sft.micro_batch=4",
        "stage.sft.global_batch=4", "stage.sft.val.max_per_task=1",
        "stage.grpo1.max_rollouts=1", "stage.grpo2.max_rollouts=1", "stage.grpo1.val_per_task=1",
        "stage.grpo2.val_per_task=1", "stage.algo1.prompts_per_step=2",
        "stage.algo2.prompts_per_step=2", "stage.algo1.group_size=2", "stage.algo2.group_size=2",
        "stage.algo1.generation.max_new_tokens=8", "stage.algo2.generation.max_new_tokens=8",
        "decoding.max_new_tokens=8",
    ]
    first = run_app(*small)
    assert first.returncode == 0, first.stderr[-4000:]
    for step in STEPS:
        assert (run / step / "done.json").is_file(), step
    for trained in ("sft", "grpo_stage1", "grpo_stage2"):
        assert (run / trained / "checkpoint" / "config.json").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary) == list(STEPS)
    table = (run / "summary.md").read_text()
    for model in ("untrained", "sft", "grpo_stage1", "grpo_stage2"):
        assert f"| {model} | technical |" in table
    assert "| model | task | SRCC | PLCC |" in first.stdout

    again = run_app(*small[:-1], f"stage.run_dir={run}", "stage.redo=[eval_grpo_stage2]",
                    f"hydra.run.dir={tmp_path / 'rerun'}")  # fmt: skip
    assert again.returncode == 0, again.stderr[-4000:]
    assert (again.stdout + again.stderr).count("already done, skipped") == len(STEPS) - 1
    assert (run / "eval_grpo_stage2" / "done.json").stat().st_mtime > (
        run / "grpo_stage2" / "done.json").stat().st_mtime

    # a reward variant reuses the base's steps before GRPO and trains both GRPO stages anew
    variant = tmp_path / "laplace"
    ablation = run_app(*small, "reward=laplace", f"stage.reuse_from={run}",
                       f"hydra.run.dir={variant}")  # fmt: skip
    assert ablation.returncode == 0, ablation.stderr[-4000:]
    assert "reused from" in ablation.stderr + ablation.stdout
    assert "eval_untrained, cot, sft, eval_sft" in ablation.stderr + ablation.stdout
    assert (variant / "sft" / "checkpoint" / "config.json").is_file()
    assert json.loads((variant / "summary.json").read_text())["sft"] == summary["sft"]
    trained = OmegaConf.load(variant / "grpo_stage1" / "pipeline_config.yaml")
    assert trained.reward.name == "laplace"

    # a read-out variant (2 sampled answers per record) reruns the evals only
    sampled = tmp_path / "sampled"
    rerun = run_app(*small, "stage.eval.samples=2", "stage.eval.sampling.max_new_tokens=8",
                    f"stage.reuse_from={run}", f"hydra.run.dir={sampled}")  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "eval_untrained, cot, sft, grpo_stage1, grpo_stage2" in rerun.stderr + rerun.stdout
    again = json.loads((sampled / "summary.json").read_text())
    assert again["grpo_stage2"] == summary["grpo_stage2"]
    assert "result" in again["eval_grpo_stage2"] and (sampled / "eval_sft" / "done.json").is_file()


@pytest.mark.parametrize("override", ["algo.lr=1e-5", "algo=dapo", "+algo.extra=1"])
def test_pipeline_refuses_top_level_algo_overrides(override):
    with pytest.raises(ConfigError, match=r"stage\.algo1.*stage\.algo2"):
        refuse_ignored_overrides(["stage=pipeline", override])


def test_pipeline_accepts_its_own_algo_overrides():
    refuse_ignored_overrides(["stage=pipeline", "stage.algo2.filter.enabled=true", "seed=1",
                              "algorithm_note=x"])  # fmt: skip
