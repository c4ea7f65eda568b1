"""Perception pretraining of the tiny model's vision tower + merger (issue 3).

A random-init tiny Qwen2.5-VL cannot learn quality cues through the LM loss in a
CPU budget (OFFLINE.md, "Learning from scratch"), so its tower first learns to
see them on labels the synthetic generator knows exactly, never the MOS:

    distortion/<d>        level 0..4 of each of DISTORTIONS (technical images; aesthetic
                          images carry their exposure as under/overexposure level
                          2|stops| - 1; alignment images are undistorted)
    aesthetic/<k>         level index of each AESTHETIC_LEVELS factor, worst -> best
                          (exposure: signed stops -2..2 as class 0..4)
    object/<region>/...   colour, shape (where the region holds objects) and count 0..3
                          of the objects rendered in each alignment region

Images are fresh procedural samples without end: sample i of a task in batch b is
drawn from SeedSequence([STREAM_SALT, seed, task, index]), disjoint from the
dataset's (seed, task, index) streams. The tower starts with a low-level bias and stays a
standard Qwen2.5-VL: its patch embedding as a DCT filter bank (init_dct_stem) and its first
block as per-patch band energies of those coefficients (init_energy_block), and it learns
at a fraction of the head's learning rate so that training refines this start rather than
overwriting it (measured, 1200 steps: blur/JPEG strength SRCC .54/.44 at the full rate,
.71/.85 at 0.3x, .79/.90 at 0.1x; README). A small head (PerceptionHead) reads the
merger tokens, the tokens the LM sees, and is dropped afterwards: the saved folder
is the base model with the tower's weights replaced (the head is kept beside it as
perception_head.safetensors for benchmarks). The result is cached in the model
cache as <base>-perception-<hash of the settings> (ensure_perception).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.strategies import DDPStrategy
from safetensors.torch import load_file, save_file
from scipy.stats import rankdata
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..data.records import TASKS
from ..data.synthetic import (
    AESTHETIC_LEVELS,
    COLOURS,
    DISTORTIONS,
    GENERATOR_VERSION,
    MAX_COUNT,
    MAX_LEVEL,
    POSITIONS,
    SAMPLERS,
    SHAPES,
    aesthetic_mos,
    technical_mos,
)
from ..eval.metrics import srcc
from ..precision import describe_device, resolve_precision, uses_cuda
from .loading import load_model

log = logging.getLogger(__name__)

PERCEPTION_VERSION = 2  # bump when labels, head or training change: it invalidates caches
STREAM_SALT = 0x9E5CE97  # keeps pretraining images apart from the dataset's seeds
IGNORE = -100  # label not applicable to this image (cross-entropy ignore_index)
REPORT = "perception_report.json"
HEAD_WEIGHTS = "perception_head.safetensors"
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


# ---------------------------------------------------------------- labels (pure)


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


# ---------------------------------------------------------------- stem


OPPONENT = ((1, 1, 1), (1, -1, 0), (1, 1, -2))  # luminance, red-green, blue-yellow


def dct_filters(patch: int, temporal: int, n: int) -> torch.Tensor:
    """(n, 3, temporal, patch, patch) orthonormal filters: the 2-D DCT-II basis functions
    phi_uv(x, y) = c_u c_v cos(pi (2x + 1) u / 2p) cos(pi (2y + 1) v / 2p) in order of u + v,
    on luminance (the first 3n/4) and on two opponent-colour channels (n/8 each), the
    same in every frame."""
    x = torch.arange(patch, dtype=torch.float64)
    basis = torch.stack([torch.cos(torch.pi * (2 * x + 1) * u / (2 * patch)) for u in range(patch)])
    basis = basis / basis.norm(dim=1, keepdim=True)
    order = sorted(((u, v) for u in range(patch) for v in range(patch)), key=lambda f: (sum(f), f))
    counts = (n - 2 * (n // 8), n // 8, n // 8)
    filters = []
    for colour, count in zip(OPPONENT, counts):
        c = torch.tensor(colour, dtype=torch.float64)
        for u, v in order[:count]:
            f = c[:, None, None] / c.norm() * torch.outer(basis[u], basis[v])
            filters.append(f[:, None].expand(3, temporal, patch, patch) / temporal**0.5)
    return torch.stack(filters).float()


@torch.no_grad()
def init_dct_stem(visual, pixel_values: torch.Tensor) -> None:
    """Start the patch embedding as dct_filters, each scaled to unit standard deviation on
    `pixel_values`: fine-detail (high-frequency) channels exist from the first step, which
    a random projection of a 14 px patch buries under the content (issue 3: a low-level
    inductive bias; the model stays a standard Qwen2.5-VL)."""
    proj = visual.patch_embed.proj
    out, _, temporal, patch, _ = proj.weight.shape
    proj.weight.copy_(dct_filters(patch, temporal, out))
    std = visual.patch_embed(pixel_values.to(proj.weight.dtype)).std(0)
    proj.weight.div_(std.clamp_min(1e-6)[:, None, None, None, None])


@torch.no_grad()
def init_energy_block(block) -> None:
    """Start a vision block (the first) as a per-patch band-energy detector: its MLP units
    2c and 2c + 1 get gate = up = +e_c and -e_c, so that with a = norm2(x)_c, the patch's
    DCT coefficient c over the RMS of all of them, silu(a) a + silu(-a) (-a) = a^2 (since
    silu(a) - silu(-a) = a): the patch's relative energy in band c. down_proj adds
    Q (a^2 - 1) to the residual, Q a random orthogonal basis; spare units start silent
    (zero down_proj columns) and the block's attention output at zero. A linear patch
    embedding cannot compute energies, and before any training a linear read-out of their
    image mean predicts blur/JPEG/noise levels with SRCC .79/.86/.62, against .07/.00/-.05
    from the coefficients alone (benchmarks/energy_probe.py)."""
    mlp, dim = block.mlp, block.norm2.weight.numel()
    n = min(dim, mlp.gate_proj.out_features // 2)
    channels, units = torch.arange(n), 2 * torch.arange(n)
    for proj in (mlp.gate_proj, mlp.up_proj):
        proj.weight[: 2 * n] = 0
        proj.bias[: 2 * n] = 0
        proj.weight[units, channels] = 1
        proj.weight[units + 1, channels] = -1
    q = torch.linalg.qr(torch.randn(dim, n, dtype=torch.float64))[0].to(mlp.down_proj.weight)
    mlp.down_proj.weight.zero_()
    mlp.down_proj.weight[:, units] = q
    mlp.down_proj.weight[:, units + 1] = q
    mlp.down_proj.bias.copy_(-q.sum(1))
    block.attn.proj.weight.zero_()
    block.attn.proj.bias.zero_()


# ---------------------------------------------------------------- head and loss


class PerceptionHead(nn.Module):
    """Multi-task read-out of the merger tokens (B, N, D), dropped after pretraining.

    Tokens are standardised per feature (`norm`, a BatchNorm without affine: a random
    tower's tokens share a large common offset that makes the read-out learn slowly; it
    is folded into the merger afterwards, fold_norm), then Linear(D, width) -> GELU; the
    global labels (GLOBAL_LABELS) are read linearly from the mean over tokens
    (translation-invariant), the region labels (REGION_LABELS per alignment region) by an
    MLP on all tokens flattened in raster order, so positions stay readable.
    """

    def __init__(self, in_dim: int, n_tokens: int, width: int = 128, token_width: int = 32):
        super().__init__()
        self.norm = nn.BatchNorm1d(in_dim, affine=False)
        self.token = nn.Sequential(nn.Linear(in_dim, width), nn.GELU())
        self.global_out = nn.Linear(width, sum(GLOBAL_LABELS.values()))
        self.region_out = nn.Sequential(
            nn.Linear(width, token_width), nn.Flatten(), nn.GELU(),
            nn.Linear(n_tokens * token_width, width), nn.GELU(),
            nn.Linear(width, len(POSITIONS) * sum(REGION_LABELS.values())),
        )  # fmt: skip

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.token(self.norm(tokens.flatten(0, 1)).view_as(tokens))
        sizes = list(GLOBAL_LABELS.values())
        logits = dict(zip(GLOBAL_LABELS, self.global_out(x.mean(1)).split(sizes, dim=-1)))
        regions = self.region_out(x).view(len(x), len(POSITIONS), -1)
        for i, p in enumerate(POSITIONS):
            parts = regions[:, i].split(list(REGION_LABELS.values()), dim=-1)
            logits.update({f"object/{p}/{e}": z for e, z in zip(REGION_LABELS, parts)})
        return logits


@torch.no_grad()
def fold_norm(visual, head: PerceptionHead) -> None:
    """Fold the head's standardisation (x - mean) / sqrt(var + eps) into the merger's last
    Linear, so the LM receives standardised tokens; the head's norm becomes the identity."""
    norm, last = head.norm, visual.merger.mlp[-1]
    scale = (norm.running_var + norm.eps).rsqrt()
    last.weight.mul_(scale[:, None])
    last.bias.sub_(norm.running_mean).mul_(scale)
    norm.running_mean.zero_()
    norm.running_var.fill_(1 - norm.eps)


def perception_loss(
    logits: dict[str, torch.Tensor], labels: torch.Tensor, weights: dict[str, float]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """sum_task weights[task] * mean over that task's labels (present in the batch) of the
    label's cross-entropy over the images it applies to; distortion levels, being ordinal,
    add (E[level] - level)^2 / MAX_LEVEL (the expected level's error in levels, whose
    gradient CE lacks: confusing level 1 with 4 costs as much as with 2). Also the terms."""
    per_group: dict[str, list[torch.Tensor]] = {g: [] for g in TASK_OF_GROUP}
    levels = torch.arange(MAX_LEVEL + 1, device=labels.device, dtype=torch.float32)
    for j, name in enumerate(LABELS):
        y, z = labels[:, j], logits[name].float()
        keep = y != IGNORE
        if keep.any():
            loss = nn.functional.cross_entropy(z[keep], y[keep])
            if name.startswith("distortion/"):
                loss = loss + ((z[keep].softmax(-1) @ levels - y[keep]) ** 2).mean() / MAX_LEVEL
            per_group[name.split("/")[0]].append(loss)
    terms = {TASK_OF_GROUP[g]: torch.stack(v).mean() for g, v in per_group.items() if v}
    return sum(weights[t] * v for t, v in terms.items()), terms


# ---------------------------------------------------------------- metrics (pure)


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
        if single.any() else float("nan"),
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


def format_metrics(metrics: dict) -> str:
    """perception_metrics as a few text lines."""
    lines = []
    if t := metrics.get("technical"):
        lines.append(f"technical (n={t['n']}): strength SRCC (where present) / presence AUC")
        lines += [f"  {d:14s} {v['srcc']:5.2f} / {v['auc']:.2f}" for d, v in t["per_type"].items()]
        lines.append(f"  {'mean':14s} {t['mean_srcc']:5.2f} / {t['mean_auc']:.2f}")
        lines.append(f"  type accuracy {t['type_accuracy']:.2f} (chance {t['type_chance']:.2f}); "
                     f"overall strength (MOS implied by the levels) SRCC {t['mos_srcc']:.2f}")
    if a := metrics.get("aesthetic"):
        lines.append("aesthetic: factor score SRCC, accuracy (chance)")
        lines += [f"  {k:14s} {a[k]['srcc']:5.2f}, {a[k]['accuracy']:.2f} ({a[k]['chance']:.2f})"
                  for k in AESTHETIC_LEVELS]  # fmt: skip
        lines.append(f"  MOS implied by the factors: SRCC {a['mos_srcc']:.2f}")
    if g := metrics.get("alignment"):
        lines.append("alignment: accuracy (chance) over regions")
        lines += [f"  {e:14s} {v['accuracy']:5.2f} ({v['chance']:.2f})" for e, v in g.items()]
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


# ---------------------------------------------------------------- data


def stream_rng(seed: int, task: str, index: int) -> np.random.Generator:
    """Generator of pretraining sample `index` of `task`: SeedSequence([STREAM_SALT, seed,
    task, index]), never one of the dataset's SeedSequence([seed, task, index])."""
    return np.random.default_rng(np.random.SeedSequence([STREAM_SALT, seed, TASKS.index(task),
                                                         index]))  # fmt: skip


def task_counts(batch_size: int, mix: dict[str, float]) -> dict[str, int]:
    """Images per task in a batch, proportional to `mix` (largest remainders)."""
    total = sum(mix.values())
    exact = {t: batch_size * w / total for t, w in mix.items()}
    counts = {t: int(v) for t, v in exact.items()}
    for t in sorted(exact, key=lambda t: counts[t] - exact[t])[: batch_size - sum(counts.values())]:
        counts[t] += 1
    return counts


def collate(image_processor, images: list, labels: list[np.ndarray], tasks: list[int]) -> dict:
    """A model batch: the processor's pixel_values and grid, label vectors, task ids."""
    pixels = image_processor(images, return_tensors="pt")
    return {"pixel_values": pixels["pixel_values"], "grid_thw": pixels["image_grid_thw"],
            "labels": torch.from_numpy(np.stack(labels)), "tasks": torch.tensor(tasks)}  # fmt: skip


class PerceptionStream(IterableDataset):
    """Endless collated batches of fresh samples; batch b is a pure function of (seed, b):
    task t's samples b * n_t .. (b + 1) * n_t - 1 with n_t = task_counts(...)[t]. Under
    data parallelism (torch.distributed initialised, W ranks) rank r yields part r of each
    batch (`batch(b, r, W)`), so the W ranks of a step see the same images as one process;
    DataLoader workers take batches w, w + W', ... so the order does not depend on the
    worker count."""

    def __init__(self, image_processor, image_size: int, batch_size: int, mix: dict, seed: int):
        self.image_processor = image_processor
        self.image_size, self.seed = image_size, seed
        self.counts = {t: n for t, n in task_counts(batch_size, mix).items() if n}

    def batch(self, b: int, part: int = 0, parts: int = 1) -> dict[str, torch.Tensor]:
        """Batch b, or its part `part` of `parts`: every parts-th sample of each task."""
        images, labels, tasks = [], [], []
        for task, n in self.counts.items():
            for i in range(b * n + part, (b + 1) * n, parts):
                sample = SAMPLERS[task](stream_rng(self.seed, task, i), self.image_size)
                images.append(sample.image)
                labels.append(label_vector(labels_of(task, sample.factors)))
                tasks.append(TASKS.index(task))
        return collate(self.image_processor, images, labels, tasks)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        dist = torch.distributed
        rank, ranks = ((dist.get_rank(), dist.get_world_size()) if dist.is_initialized()
                       else (0, 1))  # fmt: skip
        return (self.batch(b, rank, ranks) for b in itertools.count(worker, workers))


def vision_tokens(visual, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
    """The merger output, the image tokens the LM sees, as (images, tokens, dim)."""
    out = visual(pixel_values.to(visual.dtype), grid_thw=grid_thw).pooler_output
    return out.view(len(grid_thw), -1, out.shape[-1])


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
    merged = {k: np.concatenate([p[k] for p in probs]) for k in LABELS}
    return merged, np.concatenate(labels), np.concatenate(tasks)


# ---------------------------------------------------------------- pretraining and cache


def pretrain_vision(
    base_path: str | Path,
    out_path: str | Path,
    *,
    image_size: int,
    steps: int,
    batch_size: int,
    lr: float,
    tower_lr_scale: float,
    weight_decay: float,
    warmup_ratio: float,
    mix: dict[str, float],
    loss_weights: dict[str, float],
    head_width: int,
    seed: int,
    eval_seed: int,
    eval_batches: int,
    processes: int,
    workers: int,
    threads: int | None,
    precision: str,
) -> dict:
    """Train the tower + merger of the model at base_path with a PerceptionHead for `steps`
    batches of fresh samples (`mix`: task proportions), then write out_path atomically: the
    base model with the new tower, its processor, the head, and REPORT with held-out
    metrics on `eval_batches` batches of seed `eval_seed`. On a CPU, `processes` > 1 trains
    data-parallel (Lightning ddp_spawn, gloo): each process generates its part of every batch
    and computes with `threads` torch threads (None: unchanged), so generation and training
    keep every core busy (unused parameters allowed: a rank whose part holds no image of a
    task leaves that task's head outputs out of its loss); `workers` adds DataLoader
    processes that generate ahead (on a GPU the one process trains while they generate).
    `precision` is Lightning's ("auto": see precision.py). The caller's thread count and RNG
    state are kept."""
    from ..modules.pretrain import PerceptionModule  # modules import models, not vice versa

    settings = {
        "image_size": image_size, "steps": steps, "batch_size": batch_size, "lr": lr,
        "tower_lr_scale": tower_lr_scale,
        "weight_decay": weight_decay, "warmup_ratio": warmup_ratio, "mix": mix,
        "loss_weights": loss_weights, "head_width": head_width, "seed": seed,
        "eval_seed": eval_seed, "eval_batches": eval_batches, "processes": processes,
        "workers": workers, "threads": threads, "precision": precision,
    }  # fmt: skip
    precision = resolve_precision(precision, "auto")
    on_cpu = not uses_cuda("auto")
    start = time.perf_counter()
    model, processor = load_model(str(base_path))
    visual = model.model.visual
    stream = PerceptionStream(processor.image_processor, image_size, batch_size, mix, seed)
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(threads or caller_threads)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            init_dct_stem(visual, stream.batch(0)["pixel_values"])
            init_energy_block(visual.blocks[0])
            head = new_head(visual, image_size, head_width)
            module = PerceptionModule(visual, head, lr=lr, tower_lr_scale=tower_lr_scale,
                                      weight_decay=weight_decay, warmup_ratio=warmup_ratio,
                                      loss_weights=loss_weights, threads=threads)  # fmt: skip
            loader = DataLoader(stream, batch_size=None, num_workers=workers,
                                prefetch_factor=4 if workers else None)  # fmt: skip
            parallel = on_cpu and processes > 1
            trainer = L.Trainer(
                max_steps=steps, accelerator="cpu" if on_cpu else "auto",
                devices=processes if parallel else 1,
                strategy=DDPStrategy(start_method="spawn", find_unused_parameters=True)
                if parallel else "auto", precision=precision,
                logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, gradient_clip_val=1.0,
            )  # fmt: skip
            log.info("perception pretraining: precision %s (%s), %d process(es) x %s thread(s)",
                     precision, describe_device("auto"), trainer.world_size if parallel else 1,
                     threads or caller_threads)  # fmt: skip
            trainer.fit(module, loader)
        train_seconds = time.perf_counter() - start
        fold_norm(visual, head)
        held_out = PerceptionStream(processor.image_processor, image_size, batch_size, mix,
                                    eval_seed)  # fmt: skip
        probs, labels, tasks = predict_probs(visual, head, map(held_out.batch, range(eval_batches)))
    finally:
        torch.set_num_threads(caller_threads)
    report = {
        "base": Path(base_path).name, "settings": settings,
        "device": {**describe_device("auto"), "precision": precision, "processes": processes,
                   "threads": threads or caller_threads},
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - start, 1), "images_seen": steps * batch_size,
        "held_out": {"seed": eval_seed, "images": len(labels),
                     **perception_metrics(probs, labels, tasks)},
    }  # fmt: skip
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=".building-"))
    model.cpu().save_pretrained(tmp)
    processor.save_pretrained(tmp)
    save_file({k: v.contiguous().cpu() for k, v in head.state_dict().items()}, tmp / HEAD_WEIGHTS)
    (tmp / REPORT).write_text(json.dumps(report, indent=2, allow_nan=True))  # last: complete
    try:
        tmp.rename(out_path)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def perception_hash(settings: dict) -> str:
    """Hash of the pretraining settings and the label/generator versions."""
    key = {**settings, "version": PERCEPTION_VERSION, "generator": GENERATOR_VERSION}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def perception_folder(base_path: str | Path, settings: dict) -> tuple[Path, dict]:
    """The cache folder of `settings` beside base_path, and the settings with the precision
    resolved ("auto" -> this machine's), so the cache key names the precision trained in."""
    base_path = Path(base_path)
    settings = {**settings, "precision": resolve_precision(settings["precision"], "auto")}
    return base_path.parent / f"{base_path.name}-perception-{perception_hash(settings)}", settings


def ensure_perception(base_path: str | Path, settings: dict, image_size: int) -> Path:
    """The cached perception-pretrained folder beside base_path, pretraining it if missing.
    Processes that need the same folder at once (parallel sweep jobs, DDP ranks) take turns
    on an exclusive file lock beside it: the first builds it, the others wait and load it."""
    target, settings = perception_folder(base_path, settings)
    if (target / REPORT).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (target / REPORT).is_file():  # built by another process while this one waited
            return target
        log.info("perception pretraining: no cache at %s; training the vision tower for %d "
                 "steps (a few minutes, once)", target, settings["steps"])  # fmt: skip
        report = pretrain_vision(base_path, target, image_size=image_size, **settings)
    log.info("perception pretraining done in %.0f s; report: %s", report["train_seconds"],
             target / REPORT)  # fmt: skip
    return target


def new_head(visual, image_size: int, width: int) -> PerceptionHead:
    """A PerceptionHead for the merger tokens of `visual` at image_size px."""
    merge = visual.config.spatial_merge_size * visual.config.patch_size
    return PerceptionHead(visual.config.out_hidden_size, (image_size // merge) ** 2, width)


def load_head(path: str | Path, visual) -> PerceptionHead:
    """The PerceptionHead saved beside a perception-pretrained model (for benchmarks)."""
    settings = json.loads((Path(path) / REPORT).read_text())["settings"]
    head = new_head(visual, settings["image_size"], settings["head_width"])
    head.load_state_dict(load_file(Path(path) / HEAD_WEIGHTS))
    return head.eval()
