"""Perception labels: what the synthetic generator knows of each sample (never the MOS)."""

from __future__ import annotations

import numpy as np

from ..data.records import TASKS
from ..data.synthetic import (
    AESTHETIC_LEVELS,
    COLOURS,
    DISTORTIONS,
    MAX_COUNT,
    MAX_LEVEL,
    POSITIONS,
    SHAPES,
)

PERCEPTION_VERSION = 3  # bump when labels, head or training change: it invalidates caches
STREAM_SALT = 0x9E5CE97  # keeps pretraining images apart from the dataset's seeds
IGNORE = -100  # label not applicable to this image (cross-entropy ignore_index)
MAX_STOPS = 2  # aesthetic exposure: signed stops -2..2

GLOBAL_LABELS = {
    **{f"distortion/{d}": MAX_LEVEL + 1 for d in DISTORTIONS},
    **{f"aesthetic/{k}": len(v) for k, v in AESTHETIC_LEVELS.items() if k != "exposure"},
    "aesthetic/exposure": 2 * MAX_STOPS + 1,
}
REGION_LABELS = {"colour": len(COLOURS), "shape": len(SHAPES), "count": MAX_COUNT + 1}
LABELS = {
    **GLOBAL_LABELS,
    **{f"object/{p}/{e}": n for p in POSITIONS for e, n in REGION_LABELS.items()},
}  # label name -> number of classes; a label vector follows this order
TASK_OF_GROUP = {"distortion": "technical", "aesthetic": "aesthetic", "object": "alignment"}


def aesthetic_scores(factor: str) -> np.ndarray:
    """The aesthetic score in [0, 1] of each class of `aesthetic/<factor>` (synthetic.py's
    index / (n - 1); exposure classes are stops -2..2, score 1 - |stops| / 2)."""
    if factor == "exposure":
        return 1 - np.abs(np.arange(-MAX_STOPS, MAX_STOPS + 1)) / MAX_STOPS
    n = len(AESTHETIC_LEVELS[factor])
    return np.arange(n) / (n - 1)


def labels_of(task: str, factors: dict) -> dict[str, int]:
    """The perception labels (name -> class) of a sample of `task` from its Sample.factors."""
    if task == "technical":
        return {f"distortion/{d}": int(factors["levels"][d]) for d in DISTORTIONS}
    if task == "aesthetic":
        stops = factors["exposure"]
        side = "underexposure" if stops < 0 else "overexposure"
        exposure = {side: 2 * abs(stops) - 1} if stops else {}
        return {
            **{f"distortion/{d}": exposure.get(d, 0) for d in DISTORTIONS},
            **{f"aesthetic/{k}": AESTHETIC_LEVELS[k].index(factors[k])
               for k in AESTHETIC_LEVELS if k != "exposure"},
            "aesthetic/exposure": stops + MAX_STOPS,
        }  # fmt: skip
    if task == "alignment":
        shown = {o["rendered"]["position"]: o["rendered"] for o in factors["objects"]
                 if o["rendered"]}  # fmt: skip
        labels = {f"distortion/{d}": 0 for d in DISTORTIONS}
        for p in POSITIONS:
            labels[f"object/{p}/count"] = shown[p]["count"] if p in shown else 0
            if p in shown:
                labels[f"object/{p}/colour"] = COLOURS.index(shown[p]["colour"])
                labels[f"object/{p}/shape"] = SHAPES.index(shown[p]["shape"])
        return labels
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def label_vector(labels: dict[str, int]) -> np.ndarray:
    """`labels` in LABELS order, IGNORE where a label does not apply."""
    return np.array([labels.get(name, IGNORE) for name in LABELS], np.int64)
