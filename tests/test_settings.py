"""settings_from: a config node becomes a nested settings dataclass; unknown keys are named."""

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from omniquality_r.modules.optim import optimizer_with_schedule
from omniquality_r.settings import ConfigError, settings_from
from omniquality_r.stages.common import optimizer_factories
from omniquality_r.stages.grpo import grpo_settings


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
    s = grpo_settings(cfg, total_steps=10)
    assert s.group_size >= 2 and s.kl.type in ("k1", "k3", "none")
    assert s.generation["max_new_tokens"] > 0
    params = torch.nn.Linear(2, 2).parameters()
    optim = optimizer_with_schedule(params, **optimizer_factories(cfg.algo.optim), total_steps=10)
    assert optim["optimizer"].defaults["lr"] == cfg.algo.optim.optimizer.lr > 0


@pytest.mark.parametrize("stage", [1, 2])
def test_the_tiny_rl_experiments_are_the_pipelines_grpo_steps(stage):
    """experiment=tiny_rl_stage<n> (stage=grpo alone) trains with the pipeline's algo<n>."""
    pipeline = composed([]).stage[f"algo{stage}"]
    assert composed([f"experiment=tiny_rl_stage{stage}"]).algo == pipeline
