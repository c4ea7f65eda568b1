"""Held-out metrics of the pretrained tower + head, and their printed report."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata

from ..data.records import TASKS
from ..data.synthetic import (
    AESTHETIC_LEVELS,
    DISTORTIONS,
    MAX_LEVEL,
    POSITIONS,
    aesthetic_mos,
    technical_mos,
)
from ..eval.metrics import srcc
from .labels import LABELS, REGION_LABELS, aesthetic_scores
from .tower import vision_tokens

REPORT = "perception_report.json"


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney U statistic (ties at half); NaN without both classes."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _finite_mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def technical_metrics(probs: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """Distortion read-out of (N, classes) probabilities vs (N, len(LABELS)) labels.

    Per type: `srcc` (strength) of the expected level vs the level 1..4 over the images
    that have the type, `auc` of P(level > 0) for its presence over all images;
    `type_accuracy`: on single-distortion images, the most probably present type is the
    true one (chance 1/8); `mos_srcc` (overall strength): technical_mos of the expected
    levels vs technical_mos of the true levels (the MOS is never trained on)."""
    levels = np.stack([labels[:, list(LABELS).index(f"distortion/{d}")] for d in DISTORTIONS], 1)
    p = np.stack([probs[f"distortion/{d}"] for d in DISTORTIONS], 1)  # (N, 8, 5)
    expected = p @ np.arange(MAX_LEVEL + 1)
    present = 1 - p[..., 0]
    has = levels > 0
    per_type = {
        d: {"srcc": srcc(expected[has[:, i], i], levels[has[:, i], i]),
            "auc": auc(present[:, i], has[:, i])}
        for i, d in enumerate(DISTORTIONS)
    }  # fmt: skip
    single = has.sum(1) == 1
    mos = [technical_mos(dict(zip(DISTORTIONS, row))) for row in (expected, levels)]
    return {
        "n": len(levels),
        "mean_srcc": _finite_mean([v["srcc"] for v in per_type.values()]),
        "mean_auc": _finite_mean([v["auc"] for v in per_type.values()]),
        "type_accuracy": float(np.mean(present[single].argmax(1) == levels[single].argmax(1)))
        if single.any()
        else float("nan"),
        "type_chance": 1 / len(DISTORTIONS),
        "mos_srcc": srcc(mos[0], mos[1]),
        "per_type": per_type,
    }


def _accuracy(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Accuracy, and chance as the majority class's frequency."""
    return {"accuracy": float(np.mean(pred == true)),
            "chance": float(np.bincount(true).max() / len(true))}  # fmt: skip


def aesthetic_metrics(probs: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """Per factor: accuracy vs chance and SRCC of the expected score vs the true score;
    `mos_srcc`: aesthetic_mos of the expected scores vs of the true ones."""
    out, expected, true = {}, {}, {}
    for k in AESTHETIC_LEVELS:
        name = f"aesthetic/{k}"
        y, scores = labels[:, list(LABELS).index(name)], aesthetic_scores(k)
        expected[k], true[k] = probs[name] @ scores, scores[y]
        out[k] = {**_accuracy(probs[name].argmax(1), y), "srcc": srcc(expected[k], true[k])}
    out["mos_srcc"] = srcc(aesthetic_mos(expected), aesthetic_mos(true))
    return out


def alignment_metrics(probs: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """Pooled over regions: colour and shape accuracy where objects are, count accuracy and
    position (region occupied or not) accuracy everywhere, each with its chance."""
    col = {e: [f"object/{p}/{e}" for p in POSITIONS] for e in REGION_LABELS}
    y = {e: labels[:, [list(LABELS).index(n) for n in col[e]]].ravel() for e in REGION_LABELS}
    pred = {e: np.stack([probs[n].argmax(1) for n in col[e]], 1).ravel() for e in REGION_LABELS}
    occupied = y["count"] > 0
    return {
        "colour": _accuracy(pred["colour"][occupied], y["colour"][occupied]),
        "shape": _accuracy(pred["shape"][occupied], y["shape"][occupied]),
        "count": _accuracy(pred["count"], y["count"]),
        "position": _accuracy((pred["count"] > 0).astype(int), occupied.astype(int)),
    }


def position_metrics(probs: dict[str, np.ndarray]) -> dict:
    """How often a token's (row, column) read-out is its own place in the grid; chance 1/N."""
    rows, cols = probs["token/row"], probs["token/col"]  # (B, N, side)
    n, side = rows.shape[1], rows.shape[2]
    where = np.arange(n)
    hit = (rows.argmax(-1) == where // side) & (cols.argmax(-1) == where % side)
    return {"accuracy": float(hit.mean()), "chance": 1 / n}


def format_metrics(metrics: dict) -> str:
    """perception_metrics as a few text lines."""
    lines = []
    if t := metrics.get("technical"):
        lines.append(f"technical (n={t['n']}): strength SRCC (where present) / presence AUC")
        lines += [f"  {d:14s} {v['srcc']:5.2f} / {v['auc']:.2f}" for d, v in t["per_type"].items()]
        lines.append(f"  {'mean':14s} {t['mean_srcc']:5.2f} / {t['mean_auc']:.2f}")
        lines.append(
            f"  type accuracy {t['type_accuracy']:.2f} (chance {t['type_chance']:.2f}); "
            f"overall strength (MOS implied by the levels) SRCC {t['mos_srcc']:.2f}"
        )
    if a := metrics.get("aesthetic"):
        lines.append("aesthetic: factor score SRCC, accuracy (chance)")
        lines += [f"  {k:14s} {a[k]['srcc']:5.2f}, {a[k]['accuracy']:.2f} ({a[k]['chance']:.2f})"
                  for k in AESTHETIC_LEVELS]  # fmt: skip
        lines.append(f"  MOS implied by the factors: SRCC {a['mos_srcc']:.2f}")
    if g := metrics.get("alignment"):
        lines.append("alignment: accuracy (chance) over regions")
        lines += [f"  {e:14s} {v['accuracy']:5.2f} ({v['chance']:.2f})" for e, v in g.items()]
    if p := metrics.get("position"):
        lines.append(f"token position (own grid cell): accuracy {p['accuracy']:.2f} "
                     f"(chance {p['chance']:.2f})")  # fmt: skip
    return "\n".join(lines)


def format_perception_report(report: dict) -> str:
    """A pretraining REPORT as text: budget, then the held-out metrics."""
    h = report["held_out"]
    return (f"perception pretraining of {report['base']}: {report['images_seen']} images in "
            f"{report['train_seconds']:.0f} s; held out: seed {h['seed']}, {h['images']} images\n"
            + format_metrics(h))  # fmt: skip


def perception_metrics(probs: dict[str, np.ndarray], labels: np.ndarray, tasks: np.ndarray):
    """technical/aesthetic/alignment metrics, each on the images of that task only."""
    fns = {"technical": technical_metrics, "aesthetic": aesthetic_metrics,
           "alignment": alignment_metrics}  # fmt: skip
    out = {}
    for t, fn in fns.items():
        rows = tasks == TASKS.index(t)
        if rows.any():
            out[t] = fn({k: v[rows] for k, v in probs.items()}, labels[rows])
    return out


@torch.no_grad()
def predict_probs(visual, head, batches) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Class probabilities per label, labels and task ids over collated `batches`."""
    visual.eval(), head.eval()
    probs, labels, tasks = [], [], []
    for batch in batches:
        device = next(head.parameters()).device
        pixels, grid = batch["pixel_values"].to(device), batch["grid_thw"].to(device)
        tokens = vision_tokens(visual, pixels, grid)
        probs.append({k: v.softmax(-1).float().cpu().numpy() for k, v in head(tokens).items()})
        labels.append(batch["labels"].numpy())
        tasks.append(batch["tasks"].numpy())
    merged = {k: np.concatenate([p[k] for p in probs]) for k in [*LABELS, "token/row", "token/col"]}
    return merged, np.concatenate(labels), np.concatenate(tasks)
