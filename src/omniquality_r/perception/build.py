"""Pretrain the tiny model's tower once per settings and cache it beside the base model as
<base>-perception-<hash of the settings> (ensure_perception); stages call it, loading never
does."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from ..data.synthetic import GENERATOR_VERSION
from ..models.loading import load_model
from ..precision import describe_device, resolve_precision, uses_cuda
from .head import HEAD_WEIGHTS, fold_norm, new_head
from .labels import PERCEPTION_VERSION
from .module import PerceptionModule
from .report import REPORT, perception_metrics, position_metrics, predict_probs
from .stream import PerceptionStream
from .tower import init_dct_stem, init_energy_block

log = logging.getLogger(__name__)


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
                     **perception_metrics(probs, labels, tasks),
                     **({"position": position_metrics(probs)} if loss_weights["position"] else {})},
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
