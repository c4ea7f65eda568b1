"""stage=sft: supervised fine-tuning on rejection-sampled CoT rows (modules/sft.py)."""

from __future__ import annotations

import functools
import logging

from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from ..data.batches import EpochBatches
from ..data.collate import collate_sft
from ..data.records import from_row
from ..modules.sft import SFTModule, accumulation_steps, read_cot, repeat_per_task, train_sft
from .common import (
    CHECKPOINT,
    configured_model,
    finish_logging,
    instructions_of,
    lightning_trainer,
    optimizer_factories,
    output_dir,
    resume_path,
    sample_per_task,
    trainable,
)

log = logging.getLogger(__name__)


def sft_stage(cfg: DictConfig) -> dict:
    """SFT on the CoT rows of `stage.cot_path` (train; val for loss and SRCC/PLCC);
    saves a checkpoint and train_summary.json to <run>/checkpoint."""
    s = cfg.stage
    tasks = instructions_of(cfg)
    rows = read_cot(s.cot_path)
    other = sorted({r["task"] for r in rows} - set(tasks))
    if other:  # e.g. task=[alignment] on the pipeline's three-task cot.jsonl
        log.info("SFT: leaving out the CoT rows of task(s) %s (not in task=%s)", other,
                 sorted(tasks))  # fmt: skip
        rows = [r for r in rows if r["task"] in tasks]
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    if not train:
        raise ValueError(f"{s.cot_path}: no rows of split 'train' for task(s) {sorted(tasks)}")
    train = repeat_per_task(train, OmegaConf.to_container(s.repeat_per_task))
    model, processor = configured_model(cfg, on_device=False)
    collate = functools.partial(collate_sft, processor, instructions=tasks,
                                system_prompt=cfg.system_prompt, keep_plan=s.keep_plan,
                                max_length=s.max_length, cache={})  # fmt: skip
    val_loader = DataLoader(val, batch_size=s.micro_batch, collate_fn=collate,
                            num_workers=s.num_workers) if val else None  # fmt: skip
    module = SFTModule(
        trainable(cfg, model), processor, **optimizer_factories(s.optim),
        val_records=sample_per_task([from_row(r) for r in val], s.val.max_per_task),
        instructions=tasks, system_prompt=cfg.system_prompt,
        generation=OmegaConf.to_container(cfg.decoding, resolve=True),
        readouts=list(s.val.readouts), val_batch_size=s.val.batch_size,
    )  # fmt: skip
    trainer = lightning_trainer(cfg, max_epochs=s.epochs, max_steps=s.max_steps,
                                gradient_clip_val=s.grad_clip, num_sanity_val_steps=0,
                                log_every_n_steps=s.log_every_n_steps,
                                use_distributed_sampler=False)  # fmt: skip
    # Each rank its share of every global batch, resumable mid-epoch (data/batches.py).
    world = trainer.world_size
    order = EpochBatches(list(range(len(train))), s.micro_batch * world, seed=cfg.seed,
                         position=lambda: module.batches, drop_last=world > 1)  # fmt: skip
    loader = DataLoader(train, batch_sampler=order, collate_fn=collate,
                        num_workers=s.num_workers)  # fmt: skip
    # Accumulation needs the world size, which only the Trainer resolves (devices "auto",
    # nodes); both attributes are read when `fit` starts.
    trainer.accumulate_grad_batches = accumulation_steps(s.global_batch, s.micro_batch,
                                                         trainer.world_size)  # fmt: skip
    if s.val.every_n_steps:
        trainer.val_check_interval = s.val.every_n_steps * trainer.accumulate_grad_batches
        trainer.check_val_every_n_epoch = None
    summary = train_sft(module, trainer, loader, val_loader, output_dir(cfg) / CHECKPOINT,
                        ckpt_path=resume_path(trainer))  # fmt: skip
    finish_logging(trainer.logger)
    final = {k: v for k, v in summary["final"].items() if k == "val/loss" or k.endswith("all/srcc")}
    log.info("SFT: %d steps, %.1f samples/s; final %s", summary["steps"],
             summary["samples_per_s"], final)  # fmt: skip
    return summary
