"""stage=pretrain: the tiny model's perception-pretrained tower (perception/build.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from ..perception.report import REPORT as PERCEPTION_REPORT
from ..perception.report import format_perception_report
from .common import log_metrics, output_dir, scalars, tiny_model_path

log = logging.getLogger(__name__)


def pretrain_stage(cfg: DictConfig) -> dict:
    """Perception pretraining of the tiny model's vision tower (perception/): build
    its cache or reuse it, then write and print its held-out report in the run dir."""
    m = cfg.model
    if m.spec is None or not m.get("perception"):
        raise ValueError("stage=pretrain needs the tiny model with model.perception set")
    path = tiny_model_path(cfg)
    report = json.loads((Path(path) / PERCEPTION_REPORT).read_text())
    (output_dir(cfg) / PERCEPTION_REPORT).write_text(json.dumps(report, indent=2))
    print(format_perception_report(report))
    log_metrics(cfg, scalars(report, "pretrain"))
    log.info("perception-pretrained model: %s", path)
    return report
