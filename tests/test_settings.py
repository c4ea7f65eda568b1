"""settings_from: a config node becomes a nested settings dataclass; unknown keys are named."""

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from omniquality_r.modules.grpo import GRPOSettings
from omniquality_r.settings import ConfigError, settings_from


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


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml")))
def test_every_algo_config_builds_grpo_settings(name):
    """Each composed conf/algo choice maps onto GRPOSettings with no key left over."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        algo = compose("config", overrides=[f"algo={name}"]).algo
    s = settings_from(GRPOSettings, OmegaConf.to_container(algo, resolve=True), "algo")
    assert s.group_size >= 2 and s.kl.type in ("k1", "k3", "none")
    assert s.generation["max_new_tokens"] > 0
