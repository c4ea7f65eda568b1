"""Supervised fine-tuning on the chain-of-thought data (METHOD.md step 2).

Loss (`sft_loss`): token-mean cross-entropy over the assistant tokens (labels != -100,
data/collate.py), -1/N sum_{t: label_t != -100} log p(label_t | tokens < t); the prefix every
row shares (the system prompt) runs once per batch (models/shared_prefix.py) and the output
layer only on the labelled positions.
Optimiser and schedule: conf/optim (modules/optim.py), shared with GRPO: AdamW(lr,
betas=(0.9, 0.95), weight_decay=0) on the trainable parameters; per optimiser step s of T, warmup
w = ceil(warmup_ratio * T), m = min_lr_ratio:

    lr(s) = lr * (s + 1) / w                                                s < w
    lr(s) = lr * (m + (1 - m) * (1 + cos(pi * (s - w) / (T - w))) / 2)     s >= w

Grad clipping (norm 1.0) and accumulation to the global batch are the Trainer's
(`gradient_clip_val`, `accumulate_grad_batches` = global / (micro * world size)).
Validation: loss on the val rows, then generation on `val_records` through the same code
as stage=eval (eval.evaluate.predict + metric_rows), logged as
val/<readout>/<task>/<dataset>/<metric>.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import lightning as L
import torch

from ..data.collate import IGNORE_INDEX
from ..data.records import Record
from ..eval.evaluate import flat_metrics, metric_rows, predict
from ..models.loading import count_parameters, vision_trainable
from ..models.shared_prefix import (
    common_prefix_length,
    hidden_after_prefix,
    image_features,
    lm_logits,
)
from ..precision import trainer_device
from ..settings import ConfigError
from .checkpoint import generation_under, save_trained
from .optim import optimizer_with_schedule

log = logging.getLogger(__name__)

BATCH_INFO = ("ids", "skipped", "truncated")  # collate_sft's bookkeeping, not model inputs


def read_cot(path: str | Path) -> list[dict]:
    """Rows of a cot.jsonl (Record fields + plan, reasoning, score, ...)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CoT data not found: {path} (run stage=cot, set stage.cot_path)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def repeat_per_task(rows: Sequence[dict], repeats: Mapping[str, int]) -> list[dict]:
    """Each row `repeats[row["task"]]` times (1 for a task not named), in order: a task's share
    of every SFT epoch. A task named that no row has, or a repeat that is not an integer >= 1,
    is a ConfigError naming it."""
    tasks = {r["task"] for r in rows}
    for task, n in repeats.items():
        if task not in tasks:
            raise ConfigError(f"stage.repeat_per_task.{task}: no CoT row of that task; "
                              f"the rows' tasks: {sorted(tasks)}")  # fmt: skip
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"stage.repeat_per_task.{task}={n!r}: expected an integer >= 1")
    return [r for r in rows for _ in range(repeats.get(r["task"], 1))]


def accumulation_steps(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Micro-batches per optimiser step: global_batch / (micro_batch * world_size), exact."""
    per_step = micro_batch * world_size
    if global_batch < per_step or global_batch % per_step:
        raise ValueError(f"global batch {global_batch} is not a multiple of micro batch "
                         f"{micro_batch} x world size {world_size}")  # fmt: skip
    return global_batch // per_step


def sft_loss(model, batch: dict, features: tuple | None = None) -> torch.Tensor:
    """The module docstring's loss on a collate_sft batch (model inputs and labels);
    `features` per row (image_features), when known, stand in for the vision tower."""
    ids = batch["input_ids"]
    shared = common_prefix_length(model, ids, batch["attention_mask"])
    # rows sharing nothing (never the case for collate_sft's batches): each its own prefix
    groups = torch.zeros(len(ids), dtype=torch.long) if shared else torch.arange(len(ids))
    shared = shared or 1
    hidden = hidden_after_prefix(model, batch, prefix_len=shared, groups=groups,
                                 features=features)  # fmt: skip
    targets = batch["labels"][:, shared:]  # hidden[:, j] predicts token shared + j
    keep = targets != IGNORE_INDEX
    logits = lm_logits(model, hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, targets[keep])


class SFTModule(L.LightningModule):
    """Next-token SFT of a Qwen2.5-VL (or its peft wrapper) on collate_sft batches."""

    def __init__(
        self,
        model,
        processor,
        *,
        optimizer: Callable,
        scheduler: Callable,
        val_records: Sequence[Record] = (),
        instructions: dict[str, str] | None = None,
        system_prompt: str = "",
        generation: dict | None = None,
        readouts: Sequence[str] = ("greedy",),
        val_batch_size: int = 16,
    ):
        super().__init__()
        self.model = model
        self.processor = processor
        self.optimizer, self.scheduler = optimizer, scheduler  # conf/optim partials
        self.val_records = list(val_records)
        self.instructions = instructions or {}
        self.system_prompt = system_prompt
        self.generation = generation or {}
        self.readouts = list(readouts)
        self.val_batch_size = val_batch_size
        self.skipped: list[str] = []  # training rows left out ("id: reason")
        self.truncated = 0  # training rows whose target was cut at max_length
        self.samples = 0  # training rows seen (this process)
        self.longest_target = 0  # tokens with a label, for the generation-length check
        self.val_seconds = 0.0
        self.validated_at = -1  # global step of the last validation
        self.frozen_features: dict[str, torch.Tensor] = {}  # row id -> frozen tower output
        self.batches = 0  # micro-batches trained on (the training batches' resume position)

    # The counters resume exactly with the run (last.ckpt): the batch position (a resumed
    # epoch continues in order, data/batches.EpochBatches) and the skipped/truncated rows.
    COUNTERS = ("batches", "skipped", "truncated", "samples", "longest_target")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sft"] = {k: getattr(self, k) for k in self.COUNTERS}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for k, v in checkpoint.get("sft", {}).items():
            setattr(self, k, v)

    def _loss(self, batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k not in BATCH_INFO}
        return sft_loss(self.model, inputs, self._frozen_features(batch["ids"], inputs))

    def _frozen_features(self, ids: list[str], inputs: dict) -> tuple | None:
        """A frozen tower's output is a function of the image alone: computed at a row's first
        batch and reused every epoch after (None while the tower trains)."""
        if vision_trainable(self.model):
            return None
        if not all(i in self.frozen_features for i in ids):
            with torch.no_grad():
                self.frozen_features.update(zip(ids, image_features(self.model, inputs)))
        return tuple(self.frozen_features[i] for i in ids)

    def training_step(self, batch: dict, batch_idx: int):
        self.batches += 1
        for reason in batch["skipped"]:
            log.warning("SFT: skipping training row %s", reason)
        self.skipped += batch["skipped"]
        self.truncated += batch["truncated"]
        self.log_dict({"train/skipped": float(len(self.skipped)),
                       "train/truncated": float(self.truncated)})  # fmt: skip
        if "input_ids" not in batch:  # every row of this micro-batch was skipped
            return None
        n = batch["input_ids"].shape[0]
        self.samples += n
        longest = int((batch["labels"] != IGNORE_INDEX).sum(1).max())
        self.longest_target = max(self.longest_target, longest)
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int):
        for reason in batch["skipped"]:
            log.warning("SFT: skipping validation row %s", reason)
        if "input_ids" in batch:
            n = batch["input_ids"].shape[0]
            self.log("val/loss", self._loss(batch), prog_bar=True, batch_size=n)

    def on_validation_epoch_start(self) -> None:
        self._val_start = time.perf_counter()

    def on_validation_epoch_end(self) -> None:
        if self.val_records and not self.trainer.sanity_checking:
            if self.longest_target > self.generation.get("max_new_tokens", math.inf):
                log.warning("SFT targets reach %d tokens but validation generates at most %d: "
                            "raise decoding.max_new_tokens", self.longest_target,
                            self.generation["max_new_tokens"])  # fmt: skip
            generation = generation_under(self.trainer.strategy, self.generation)
            rows, _ = predict(self.model, self.processor, self.val_records,
                              instructions=self.instructions, system_prompt=self.system_prompt,
                              generation=generation, readouts=self.readouts,
                              batch_size=self.val_batch_size, desc="val")  # fmt: skip
            metrics = {r: metric_rows(rows, r) for r in self.readouts}
            self.log_dict(flat_metrics(metrics, prefix="val"))
        self.validated_at = self.trainer.global_step
        self.val_seconds += time.perf_counter() - self._val_start

    def configure_optimizers(self):
        total = int(self.trainer.estimated_stepping_batches)
        return optimizer_with_schedule(self.model.parameters(), self.optimizer, self.scheduler,
                                       total)  # fmt: skip


def train_sft(module: SFTModule, trainer: L.Trainer, train_loader, val_loader, out_dir,
              ckpt_path: str | None = None) -> dict:  # fmt: skip
    """Fit (resuming from the Lightning checkpoint `ckpt_path` if given); validate at the end
    unless the last step just did; save the Hugging Face checkpoint (model + processor; LoRA:
    adapter + merged) and train_summary.json into `out_dir`."""
    start = time.perf_counter()
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
    train_s = time.perf_counter() - start - module.val_seconds  # fit time outside validation
    if val_loader is not None and module.validated_at != trainer.global_step:
        trainer.validate(module, val_loader, verbose=False)
    steps = trainer.global_step
    samples = module.samples * trainer.world_size
    rows_seen = (module.samples + len(module.skipped)) * trainer.world_size
    summary = {
        "steps": steps,
        "epochs": round(rows_seen / len(train_loader.dataset), 3),
        "samples": samples,
        "wall_s": round(time.perf_counter() - start, 2),
        "train_s": round(train_s, 2),
        "s_per_step": round(train_s / steps, 4) if steps else None,
        "samples_per_s": round(samples / train_s, 2) if samples else None,
        "skipped": len(module.skipped),
        "truncated": module.truncated,
        "parameters": count_parameters(module.model),
        "device": trainer_device(trainer),
        "final": {k: float(v) if math.isfinite(v) else None  # strict JSON: NaN -> null
                  for k, v in trainer.callback_metrics.items()},
    }
    save_trained(trainer, module.model, module.processor, Path(out_dir))
    if trainer.is_global_zero:
        (Path(out_dir) / "train_summary.json").write_text(json.dumps(summary, indent=2))
        log.info("SFT checkpoint and train_summary.json written to %s", out_dir)
    return summary
