"""stage.reuse_from: which of a base run's steps a new pipeline run may copy in."""

import shutil

import pytest
from omegaconf import OmegaConf

from omniquality_r.settings import ConfigError
from omniquality_r.stages.pipeline import (
    BUILDS_ON,
    DONE,
    PIPELINE,
    STEP_CONFIG,
    _compared,
    reusable_steps,
    reuse_base_steps,
)

BASE = {"seed": 0, "reward.name": "gaussian", "stage.sft.epochs": 6,
        "stage.algo2.filter.enabled": True, "stage.eval.max_per_task": 100}  # fmt: skip
BEFORE_GRPO = ("pretrain", "eval_untrained", "cot", "sft", "eval_sft")
TRAINED = ("pretrain", "eval_untrained", "cot", "sft", "grpo_stage1", "grpo_stage2")


def changed(**values):
    return {**BASE, **{k.replace("__", "."): v for k, v in values.items()}}


def test_an_unchanged_config_reuses_every_step():
    assert reusable_steps(BASE, dict(BASE))[-1] == "eval_grpo_stage2"


def test_a_reward_change_reuses_the_steps_before_grpo():
    assert reusable_steps(BASE, changed(reward__name="laplace")) == BEFORE_GRPO


def test_a_stage2_change_reuses_stage1():
    steps = reusable_steps(BASE, changed(stage__algo2__filter__enabled=False))
    assert steps == (*BEFORE_GRPO, "grpo_stage1", "eval_grpo_stage1")


def test_an_eval_change_keeps_every_trained_step_but_no_eval():
    assert reusable_steps(BASE, changed(stage__eval__max_per_task=50)) == TRAINED


def test_an_untrained_eval_change_keeps_everything_else():
    steps = reusable_steps(BASE, {**BASE, "stage.eval_untrained.max_per_task": 5})
    assert steps == tuple(name for name, *_ in PIPELINE if name != "eval_untrained")


def test_each_step_builds_on_an_earlier_one():
    order = [name for name, *_ in PIPELINE]
    assert set(BUILDS_ON) == set(order[1:])
    assert all(order.index(BUILDS_ON[name]) < order.index(name) for name in BUILDS_ON)
    assert all(BUILDS_ON[name] == start for name, *_, start in PIPELINE if start)


@pytest.mark.parametrize("key", ["seed", "model.hidden_size", "data.root"])
def test_a_change_of_an_unlisted_or_shared_key_reuses_nothing(key):
    assert reusable_steps(BASE, {**BASE, key: "other"}) == ()


def test_paths_inside_the_run_folder_compare_equal(tmp_path):
    cfgs = [pipeline_cfg(tmp_path / run) for run in ("a", "b")]
    for cfg in cfgs:
        cfg.callbacks = {"dirpath": "${paths.output_dir}/checkpoints"}
    assert _compared(cfgs[0]) == _compared(cfgs[1])


def test_a_key_only_one_side_has_counts_as_changed():
    assert reusable_steps(BASE, {**BASE, "stage.sft.extra": 1}) == BEFORE_GRPO[:3]
    assert reusable_steps(BASE, {**BASE, "stage.eval.samples": 8}) == TRAINED


def pipeline_cfg(tmp_path, **stage):
    stage = {"sft": {"epochs": 6}, "run_dir": None, "reuse_from": str(tmp_path / "base"), **stage}
    return OmegaConf.create({"seed": 0, "paths": {"output_dir": str(tmp_path / "new")},
                             "model": {"perception": {"steps": 1200}},
                             "reward": {"name": "gaussian"}, "stage": stage})  # fmt: skip


def finished(run, name, cfg):
    (run / name).mkdir(parents=True)
    (run / name / DONE).write_text("{}")
    (run / name / "last.ckpt").write_text("optimizer state")
    OmegaConf.save(cfg, run / name / STEP_CONFIG)


def test_reuse_copies_the_unchanged_leading_steps_without_lightning_checkpoints(tmp_path):
    base_cfg = pipeline_cfg(tmp_path)
    for name in (*BEFORE_GRPO, "grpo_stage1"):
        finished(tmp_path / "base", name, base_cfg)
    cfg = pipeline_cfg(tmp_path)
    cfg.reward.name = "laplace"
    run = tmp_path / "new"
    assert reuse_base_steps(cfg, run, tmp_path / "base") == list(BEFORE_GRPO)
    assert (run / "sft" / DONE).is_file() and not (run / "sft" / "last.ckpt").exists()
    assert not (run / "grpo_stage1").exists()


def test_reuse_skips_what_builds_on_a_step_the_base_did_not_finish(tmp_path):
    base_cfg = pipeline_cfg(tmp_path)
    for name in ("pretrain", "eval_untrained", "sft"):
        finished(tmp_path / "base", name, base_cfg)
    (tmp_path / "base" / "cot").mkdir()  # interrupted: no done.json
    assert reuse_base_steps(pipeline_cfg(tmp_path), tmp_path / "new",
                            tmp_path / "base") == ["pretrain", "eval_untrained"]  # fmt: skip


def test_reuse_copies_the_trained_steps_of_an_eval_change_but_not_its_evals(tmp_path):
    base_cfg = pipeline_cfg(tmp_path, eval={"samples": 1})
    for name, *_ in PIPELINE:
        finished(tmp_path / "base", name, base_cfg)
    shutil.rmtree(tmp_path / "base" / "eval_sft")  # an eval the base lost changes nothing
    run = tmp_path / "new"
    reused = reuse_base_steps(pipeline_cfg(tmp_path, eval={"samples": 8}), run, tmp_path / "base")
    assert reused == ["pretrain", "eval_untrained", "cot", "sft", "grpo_stage1", "grpo_stage2"]
    assert not any((run / name).exists() for name in ("eval_sft", "eval_grpo_stage2"))


def test_reuse_from_a_missing_folder_names_it(tmp_path):
    with pytest.raises(ConfigError, match=r"stage\.reuse_from=.*nowhere"):
        reuse_base_steps(pipeline_cfg(tmp_path), tmp_path / "new", tmp_path / "nowhere")
