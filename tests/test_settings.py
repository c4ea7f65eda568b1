"""settings_from: a config node becomes a nested settings dataclass; unknown keys are named."""

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from omniquality_r.modules.optim import optimizer_with_schedule
from omniquality_r.settings import ConfigError, settings_from
from omniquality_r.stages.common import answer_generation, optimizer_factories
from omniquality_r.stages.grpo import grpo_settings, reference_model, rollout_budget


@dataclass
class Inner:
    rho: float = 0.2
    mode: str = "sequence"


@dataclass
class Outer:
    lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.95)
    gate: Inner = field(default_factory=Inner)


def test_nested_values_and_defaults():
    s = settings_from(Outer, {"betas": [0.8, 0.9], "gate": {"rho": 0.5}})
    assert s == Outer(lr=1e-6, betas=(0.8, 0.9), gate=Inner(rho=0.5, mode="sequence"))


@pytest.mark.parametrize("values, culprit", [
    ({"lrr": 1}, "algo: unknown key(s) ['lrr']"),
    ({"gate": {"rh": 1}}, "algo.gate: unknown key(s) ['rh']"),
    ({"gate": 3}, "algo.gate: expected a mapping"),
])  # fmt: skip
def test_unknown_keys_are_named(values, culprit):
    with pytest.raises(ConfigError, match=re.escape(culprit)):
        settings_from(Outer, values, "algo")


ROOT = Path(__file__).resolve().parents[1]


def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml")))
def test_every_algo_config_builds_grpo_settings_and_its_optimiser(name):
    """Each composed conf/algo choice maps onto GRPOSettings with no key left over, and its
    optim node builds the optimiser and schedule."""
    cfg = composed(["stage=grpo", f"algo={name}"])
    s = grpo_settings(cfg, total_steps=10, max_rollouts=5)
    assert s.group_size >= 2 and s.kl.type in ("k1", "k3", "none")
    assert s.generation["max_new_tokens"] > 0 and s.generation["repetition_penalty"] == 1.0
    assert s.train_batch_size % s.group_size == 0 and cfg.algo.kl.reference == "sft"
    params = torch.nn.Linear(2, 2).parameters()
    optim = optimizer_with_schedule(params, **optimizer_factories(cfg.algo.optim), total_steps=10)
    assert optim["optimizer"].defaults["lr"] == cfg.algo.optim.optimizer.lr > 0


@pytest.mark.parametrize("stage", [1, 2])
def test_the_tiny_rl_experiments_are_the_pipelines_grpo_steps(stage):
    """experiment=tiny_rl_stage<n> (stage=grpo alone) trains with the pipeline's algo<n>."""
    pipeline = composed([]).stage[f"algo{stage}"]
    assert composed([f"experiment=tiny_rl_stage{stage}"]).algo == pipeline


def test_the_7b_experiments_are_the_authors_recipe():
    """64 prompts x 16 per rollout over 8 GPUs, 64 samples per optimiser step: 16 steps per
    rollout; episodes 2 / 8, lr 1e-6 / 1e-7; stage 2 must name the SFT model (KL reference)."""
    one = composed(["experiment=omniquality_r_7b_rl_stage1", "init_from=/sft"])
    two = composed(["experiment=omniquality_r_7b_rl_stage2", "init_from=/stage1",
                    "stage.sft_checkpoint=/sft"])  # fmt: skip
    for cfg, episodes, lr in ((one, 2, 1e-6), (two, 8, 1e-7)):
        a = cfg.algo
        assert (a.prompts_per_step, a.group_size, a.train_batch_size) == (64, 16, 64)
        assert cfg.stage.episodes == episodes and a.optim.optimizer.lr == lr
        assert cfg.trainer.devices == 8 and a.kl.reference == "sft"
        budget = rollout_budget(cfg, n_train=6400, world_size=8)
        assert budget == {"per_episode": 100, "rollouts": 100 * episodes,
                          "steps_per_rollout": 16, "total_steps": 1600 * episodes}  # fmt: skip
    assert one.stage.sft_checkpoint == "/sft"  # stage 1 starts from the SFT model
    for name in ("omniquality_r_7b_rl_stage2", "tiny_rl_stage2"):
        unnamed = composed([f"experiment={name}", "init_from=/stage1"])
        with pytest.raises(ConfigError, match=r"stage\.sft_checkpoint is not set"):
            reference_model(unnamed, torch.nn.Linear(2, 2))


def test_the_tiny_recipe_takes_several_optimiser_steps_per_rollout():
    cfg = composed([])
    for algo in (cfg.stage.algo1, cfg.stage.algo2):
        assert algo.prompts_per_step * algo.group_size // algo.train_batch_size == 2


@pytest.mark.parametrize("overrides, culprit", [
    (["algo.prompts_per_step=6"], "algo.prompts_per_step=6 does not split over 4 ranks"),
    (["algo.train_batch_size=66"], "algo.train_batch_size=66 does not split over 4 ranks"),
])  # fmt: skip
def test_rollout_budget_names_a_batch_that_does_not_split(overrides, culprit):
    with pytest.raises(ConfigError, match=re.escape(culprit)):
        rollout_budget(composed(["stage=grpo", *overrides]), n_train=100, world_size=4)


def test_kl_reference_choices():
    policy = torch.nn.Linear(2, 2)
    cfg = composed(["stage=grpo", "algo.kl.reference=init"])
    ref = reference_model(cfg, policy)
    assert ref is not policy and not ref.training
    assert not any(p.requires_grad for p in ref.parameters())
    assert reference_model(composed(["stage=grpo", "algo.kl.type=none"]), policy) is None
    with pytest.raises(ConfigError, match=re.escape("algo.kl.reference='base'")):
        reference_model(composed(["stage=grpo", "algo.kl.reference=base"]), policy)
    lora = composed(["stage=grpo", "lora=r16", "init_from=/stage1", "stage.sft_checkpoint=/sft"])
    with pytest.raises(ConfigError, match="with LoRA the KL reference"):
        reference_model(lora, policy)


def test_tiny_rl_fresh_annotates_the_main_jobs_share_and_rolls_out_on_all():
    """experiment=tiny_rl_fresh: the teacher annotates as many training records per task as the
    main job has (so its SFT data is the main job's size), GRPO takes every training record,
    and its larger synthetic set lives in a cache folder of its own."""
    main, fresh = composed([]), composed(["experiment=tiny_rl_fresh"])
    src, src_fresh = main.data.sources.synthetic, fresh.data.sources.synthetic
    train_share = 1 - main.data.split.val - main.data.split.test
    assert fresh.data.split == main.data.split  # same fractions and split seed
    assert fresh.stage.cot.max_per_task == round(src.n_per_task * train_share)
    assert src_fresh.n_per_task * train_share > 1.5 * fresh.stage.cot.max_per_task
    assert src_fresh.root != src.root and main.stage.cot.max_per_task is None
    assert fresh.stage.eval.max_per_task is None  # the whole test split


def test_tiny_rl_group16_changes_only_the_group_shape_of_tiny_rl_fresh():
    """experiment=tiny_rl_group16: the authors' G = 16, with the completions per rollout and
    the optimiser steps of tiny_rl_fresh; nothing else differs."""
    fresh, g16 = composed(["experiment=tiny_rl_fresh"]), composed(["experiment=tiny_rl_group16"])
    for algo in ("algo1", "algo2"):
        a, b = fresh.stage[algo], g16.stage[algo]
        assert b.group_size == 16 and b.prompts_per_step * 16 == a.prompts_per_step * a.group_size
        assert b.train_batch_size == a.train_batch_size and b.train_batch_size % 16 == 0
        b.group_size, b.prompts_per_step = a.group_size, a.prompts_per_step
    assert OmegaConf.to_container(g16) == OmegaConf.to_container(fresh)


@pytest.mark.parametrize("stage", ["eval", "score", "select", "benchmark"])
def test_answering_stages_sample_several_answers_with_the_authors_settings(stage):
    """One answer: the `decoding` group (greedy); several: stage.sampling, which is
    conf/decoding/sample.yaml (temperature 0.7, top_p 0.8, top_k 20)."""
    one = answer_generation(composed([f"stage={stage}"]))
    assert one["do_sample"] is False
    several = answer_generation(composed([f"stage={stage}", "stage.samples=8"]))
    assert several == {**one, "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20}
    pipeline = composed(["stage.eval.samples=8"]).stage.eval
    assert pipeline.samples == 8 and pipeline.sampling.temperature == 0.7
    same = composed([f"stage={stage}", "stage.samples=8", "decoding=sample"])
    assert answer_generation(same) == several
    ignored = composed([f"stage={stage}", "stage.samples=8", "decoding=sample",
                        "decoding.temperature=1.0"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"stage\.samples=8 .* stage\.sampling\.<key>"):
        answer_generation(ignored)


@pytest.mark.parametrize("stage", ["eval", "score", "benchmark"])
def test_answering_stages_refuse_an_ignored_decoding_before_they_load_a_model(stage, tmp_path):
    """The checkpoint does not exist, so a stage that loaded the model first would fail on it;
    the generation settings are checked before, and their error names the key to set."""
    from omniquality_r.stages.benchmark import benchmark_stage
    from omniquality_r.stages.eval import eval_stage
    from omniquality_r.stages.score import scorer_of

    missing = tmp_path / "no_checkpoint"
    overrides = [f"stage={stage}", "stage.samples=8", "decoding=sample", "decoding.top_k=5",
                 f"paths.output_dir={tmp_path / 'out'}", f"init_from={missing}"]
    if stage == "benchmark":
        overrides.append(f"stage.run_dir={missing}")
    run = {"eval": eval_stage, "score": scorer_of, "benchmark": benchmark_stage}[stage]
    with pytest.raises(ConfigError, match=r"stage\.sampling\.<key>"):
        run(composed(overrides))


def test_heldout_synthetic_scores_a_set_drawn_from_another_generator_seed():
    """experiment=heldout_synthetic: every record of a second synthetic set, drawn with a
    generator seed no training set uses, in its own cache folder."""
    cfg = composed(["experiment=heldout_synthetic"])
    node = cfg.stage.datasets.synthetic
    trained = [composed(o).data.sources.synthetic for o in ([], ["experiment=tiny_rl_fresh"])]
    source = node.sources.synthetic
    assert cfg.stage.name == "benchmark" and list(cfg.stage.readouts) == ["greedy"]
    assert all(source.seed != t.seed and source.root != t.root for t in trained)
    assert source.image_size == trained[0].image_size and source.n_per_task == 1000
    assert (node.split.val, node.split.test) == (0, 1)


@pytest.mark.parametrize("base", ["tiny_rl_fresh", "tiny_rl_group16"])
def test_long_experiments_double_only_the_stage1_rollouts(base):
    short = composed([f"experiment={base}"])
    long = composed([f"experiment={base}_long"])
    assert long.stage.grpo1.max_rollouts == 2 * short.stage.grpo1.max_rollouts == 120
    long.stage.grpo1.max_rollouts = short.stage.grpo1.max_rollouts
    assert OmegaConf.to_container(long) == OmegaConf.to_container(short)
