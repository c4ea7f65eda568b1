"""stage=grpo: the GRPO loop (modules/grpo.py) from `init_from` or the configured model."""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import time

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from ..data.records import from_row
from ..models.loading import save_checkpoint
from ..modules.grpo import GRPOModule, GRPOSettings
from ..precision import trainer_device
from ..rewards import REWARDS
from ..settings import settings_from
from .common import (
    CHECKPOINT,
    configured_model,
    data_splits,
    finish_logging,
    first_per_task,
    instructions_of,
    lightning_trainer,
    optimizer_factories,
    output_dir,
    resume_path,
    trainable,
)

log = logging.getLogger(__name__)


def grpo_settings(cfg: DictConfig, total_steps: int) -> GRPOSettings:
    """`algo` but its optimiser as GRPOSettings (an unknown key names itself), with the
    stage's additions."""
    algo = OmegaConf.to_container(cfg.algo, resolve=True)
    algo.pop("optim")  # the optimiser's node: optimizer_factories
    values = {**algo,
              "val_generation": OmegaConf.to_container(cfg.decoding, resolve=True),
              "total_steps": total_steps,
              "sample_log_every": cfg.stage.sample_log_every}  # fmt: skip
    return settings_from(GRPOSettings, values, "algo")


def _as_list(batch: list) -> list:
    return batch


def grpo_stage(cfg: DictConfig) -> dict:
    """GRPO from `init_from` (or the configured model); saves a checkpoint to <run>/checkpoint."""
    out = output_dir(cfg)
    splits = data_splits(cfg)
    train = [from_row(r) for r in splits["train"]]
    val = first_per_task([from_row(r) for r in splits["val"]], cfg.stage.val_per_task)
    policy, processor = configured_model(cfg)
    policy = trainable(cfg, policy)
    ref = None
    if cfg.algo.kl.type != "none" and cfg.algo.kl.beta > 0 and not cfg.lora.enabled:
        ref = copy.deepcopy(policy).eval().requires_grad_(False)
    reward = REWARDS[cfg.reward.name]
    params = OmegaConf.to_container(cfg.reward.params, resolve=True)
    prompts = cfg.algo.prompts_per_step
    trainer = lightning_trainer(cfg, max_epochs=cfg.stage.episodes, num_sanity_val_steps=0,
                                log_every_n_steps=1)  # fmt: skip
    # Each rank takes `prompts` prompts per step, so the schedule counts steps per rank;
    # the world size is known once the Trainer exists (set before `fit` reads them).
    steps_per_episode = math.ceil(len(train) / (prompts * trainer.world_size))
    total = steps_per_episode * cfg.stage.episodes
    if cfg.stage.max_steps > 0:
        total = min(total, cfg.stage.max_steps)
    trainer.fit_loop.epoch_loop.max_steps = total
    trainer.val_check_interval = min(cfg.stage.val_check_interval, steps_per_episode)
    trainer.check_val_every_n_epoch = None
    samples = out / "grpo_samples.jsonl"

    def sink(rows: list[dict]) -> None:
        with samples.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    module = GRPOModule(
        policy, processor, reward_fn=functools.partial(reward, **params),
        instructions=instructions_of(cfg), system_prompt=cfg.system_prompt,
        settings=grpo_settings(cfg, total), **optimizer_factories(cfg.algo.optim), ref_model=ref,
        refill_records=train, samples_sink=sink,
    )  # fmt: skip
    loader = DataLoader(train, batch_size=prompts, shuffle=True, collate_fn=_as_list,
                        drop_last=len(train) >= prompts,
                        generator=torch.Generator().manual_seed(cfg.seed))  # fmt: skip
    val_loader = DataLoader(val, batch_size=16, collate_fn=_as_list)
    start = time.time()
    trainer.fit(module, loader, val_loader, ckpt_path=resume_path(trainer))
    wall = time.time() - start
    save_checkpoint(module.model, processor, out / CHECKPOINT)
    summary = {
        "steps": trainer.global_step,
        "wall_s": wall,
        "skipped_images": module.skipped_images,
        "completions": trainer.global_step * prompts * cfg.algo.group_size * trainer.world_size,
        "device": trainer_device(trainer),
        **{k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    (out / CHECKPOINT / "train_summary.json").write_text(json.dumps(summary, indent=2))
    finish_logging(trainer)
    log.info("GRPO: %d steps in %.0f s; checkpoint %s", trainer.global_step, wall, out / CHECKPOINT)
    return summary
