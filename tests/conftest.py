"""Shared fixtures: the tiny model spec from conf/model/tiny.yaml, built once per session."""

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as run.py: before torch loads OpenMP

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_spec() -> dict:
    return OmegaConf.to_container(OmegaConf.load(ROOT / "conf/model/tiny.yaml").spec)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory, tiny_spec) -> Path:
    from omniquality_r.models.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("models"), tiny_spec)


@pytest.fixture(scope="session")
def tiny_model(tiny_path):
    from omniquality_r.models.loading import load_model

    model, processor = load_model(str(tiny_path))
    return model.eval(), processor


@pytest.fixture(scope="session")
def adamw_cosine():
    """conf/optim/adamw_cosine.yaml at a given lr and warmup, as a module's optimizer= and
    scheduler= partials (the stages' optimizer_factories)."""
    from omniquality_r.stages.common import optimizer_factories

    def make(lr: float, warmup_ratio: float = 0.03) -> dict:
        node = OmegaConf.load(ROOT / "conf/optim/adamw_cosine.yaml")
        node.optimizer.lr, node.scheduler.warmup_ratio = lr, warmup_ratio
        return optimizer_factories(node)

    return make
