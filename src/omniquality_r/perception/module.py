"""Perception pretraining loop (issue 3): the vision tower + merger and a PerceptionHead
trained on the synthetic generator's labels with perception/head.perception_loss.

Optimiser and schedule: modules/optim.py's AdamW(betas 0.9, 0.95) with linear warmup
and cosine decay to 0 over max_steps; weight decay on every parameter. The tower learns
at tower_lr_scale x lr: its stem and energy block start as DCT band energies
(perception/tower.py), which a full learning rate overwrites before the head has
learned to read them.
"""

from __future__ import annotations

import functools
import logging
import time

import lightning as L
import torch

from ..modules.optim import optimizer_with_schedule, warmup_cosine_schedule
from .head import perception_loss
from .tower import vision_tokens

log = logging.getLogger(__name__)


class PerceptionModule(L.LightningModule):
    """Trains `visual` (the Qwen2.5-VL tower incl. merger) and `head` together."""

    def __init__(self, visual, head, *, lr: float, tower_lr_scale: float, weight_decay: float,
                 warmup_ratio: float, loss_weights: dict[str, float],
                 threads: int | None = None, log_every: int = 50):  # fmt: skip
        super().__init__()
        self.visual, self.head = visual, head
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.loss_weights = dict(loss_weights)
        self.tower_lr_scale = tower_lr_scale
        self.threads, self.log_every = threads, log_every

    def setup(self, stage: str) -> None:
        """In every training process (ddp_spawn starts fresh ones): its torch threads, and a
        console handler for the progress lines where the process has no logging set up."""
        if self.threads:
            torch.set_num_threads(self.threads)
        if not logging.getLogger().handlers:
            logging.basicConfig(
                level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
            )

    def training_step(self, batch: dict, batch_idx: int):
        tokens = vision_tokens(self.visual, batch["pixel_values"], batch["grid_thw"])
        loss, terms = perception_loss(self.head(tokens), batch["labels"], self.loss_weights)
        if batch_idx == 0:
            self._start = time.perf_counter()
        elif batch_idx % self.log_every == 0 and self.trainer.is_global_zero:
            images = batch_idx * len(batch["labels"]) * self.trainer.world_size
            rate = images / (time.perf_counter() - self._start)
            log.info("perception step %d/%d loss %.3f (%s) %.0f img/s", batch_idx,
                     self.trainer.max_steps, loss.item(),
                     " ".join(f"{t} {v.item():.3f}" for t, v in terms.items()), rate)  # fmt: skip
        return loss

    def configure_optimizers(self):
        groups = [{"params": self.visual.parameters(), "lr": self.lr * self.tower_lr_scale},
                  {"params": self.head.parameters()}]  # fmt: skip
        optimizer = functools.partial(torch.optim.AdamW, lr=self.lr, betas=(0.9, 0.95),
                                      weight_decay=self.weight_decay)  # fmt: skip
        scheduler = functools.partial(warmup_cosine_schedule, warmup_ratio=self.warmup_ratio,
                                      min_lr_ratio=0.0)  # fmt: skip
        return optimizer_with_schedule(groups, optimizer, scheduler, self.trainer.max_steps)
