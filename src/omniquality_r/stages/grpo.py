"""stage=grpo: the GRPO loop (modules/grpo.py) from `init_from` or the configured model,
KL to the SFT model (stage.sft_checkpoint) by default."""

from __future__ import annotations

import copy
import functools
import json
import logging
import time

from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from ..data.batches import EpochBatches
from ..data.records import from_row
from ..decoding import describe_generation
from ..modules.checkpoint import save_trained
from ..modules.grpo import GRPOModule, GRPOSettings, SampleLog
from ..precision import trainer_device
from ..rewards import REWARDS
from ..rl.minibatch import steps_per_pass
from ..settings import ConfigError, settings_from
from .common import (
    CHECKPOINT,
    configured_model,
    data_splits,
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


def grpo_settings(cfg: DictConfig, total_steps: int, max_rollouts: int) -> GRPOSettings:
    """`algo` but its optimiser and KL reference as GRPOSettings (an unknown key names
    itself), with the stage's additions."""
    algo = OmegaConf.to_container(cfg.algo, resolve=True)
    algo.pop("optim")  # the optimiser's node: optimizer_factories
    algo["kl"].pop("reference")  # which model: reference_model
    values = {**algo,
              "val_generation": OmegaConf.to_container(cfg.decoding, resolve=True),
              "total_steps": total_steps, "max_rollouts": max_rollouts, "seed": cfg.seed,
              "sample_log_every": cfg.stage.sample_log_every}  # fmt: skip
    return settings_from(GRPOSettings, values, "algo")


def rollout_budget(cfg: DictConfig, n_train: int, world_size: int) -> dict[str, int]:
    """Rollouts per episode and in all (episodes, capped by stage.max_rollouts), optimiser
    steps per rollout and in all (the schedule's length; a rollout the STD filter shrinks
    takes fewer). prompts_per_step and train_batch_size are global (over every rank)."""
    a, G = cfg.algo, cfg.algo.group_size
    P, B = a.prompts_per_step, a.train_batch_size
    if P % world_size:
        raise ConfigError(f"algo.prompts_per_step={P} does not split over {world_size} ranks")
    if B % world_size:
        raise ConfigError(f"algo.train_batch_size={B} does not split over {world_size} ranks")
    per_episode = max(1, n_train // P)  # EpochBatches: whole batches, at least one
    rollouts = per_episode * cfg.stage.episodes
    if cfg.stage.max_rollouts > 0:
        rollouts = min(rollouts, cfg.stage.max_rollouts)
    steps = a.num_iterations * steps_per_pass(P * G, B)  # the module's rule, unfiltered
    return {"per_episode": per_episode, "rollouts": rollouts, "steps_per_rollout": steps,
            "total_steps": rollouts * steps}  # fmt: skip


def reference_model(cfg: DictConfig, policy):
    """The frozen KL reference (None without KL, or with LoRA: the adapter-free base):
    algo.kl.reference `sft` loads stage.sft_checkpoint (METHOD.md: the SFT model in both
    stages; stage 2 must name it), `init` copies the model GRPO starts from."""
    kl = cfg.algo.kl
    if kl.type == "none" or kl.beta <= 0:
        return None
    if kl.reference not in ("sft", "init"):
        raise ConfigError(f"algo.kl.reference={kl.reference!r}: expected sft or init")
    if kl.reference == "sft" and cfg.stage.sft_checkpoint is None and cfg.init_from is not None:
        raise ConfigError("stage.sft_checkpoint is not set: with algo.kl.reference=sft the KL "
                          "reference is the SFT model; pass stage.sft_checkpoint=<sft run> "
                          "(or algo.kl.reference=init)")  # fmt: skip
    sft = kl.reference == "sft" and str(cfg.stage.sft_checkpoint) != str(cfg.init_from)
    if cfg.lora.enabled:
        if sft:
            raise ConfigError("with LoRA the KL reference is the adapter-free base (the "
                              "init_from model): set algo.kl.reference=init or start from the "
                              "SFT checkpoint")  # fmt: skip
        return None
    ref = (configured_model(cfg, str(cfg.stage.sft_checkpoint), on_device=False)[0] if sft
           else copy.deepcopy(policy))  # fmt: skip
    return ref.eval().requires_grad_(False)


def grpo_stage(cfg: DictConfig) -> dict:
    """GRPO from `init_from` (or the configured model); saves a checkpoint to <run>/checkpoint."""
    out = output_dir(cfg)
    splits = data_splits(cfg)
    train = [from_row(r) for r in splits["train"]]
    val = sample_per_task([from_row(r) for r in splits["val"]], cfg.stage.val_per_task)
    policy, processor = configured_model(cfg, on_device=False)
    ref = reference_model(cfg, policy)
    policy = trainable(cfg, policy)
    reward = REWARDS[cfg.reward.name]
    params = OmegaConf.to_container(cfg.reward.params, resolve=True)
    trainer = lightning_trainer(cfg, engine_grad_clip=cfg.algo.grad_clip,
                                max_epochs=cfg.stage.episodes, num_sanity_val_steps=0,
                                log_every_n_steps=1, use_distributed_sampler=False)  # fmt: skip
    budget = rollout_budget(cfg, len(train), trainer.world_size)  # world size: from the Trainer
    trainer.val_check_interval = min(cfg.stage.val_check_interval, budget["per_episode"])
    trainer.check_val_every_n_epoch = None
    settings = grpo_settings(cfg, budget["total_steps"], budget["rollouts"])
    log.info("GRPO: %d rollouts of %d prompts x %d, %d optimiser steps each (train batch %d); "
             "rollouts: %s; validation: %s", budget["rollouts"], cfg.algo.prompts_per_step,
             cfg.algo.group_size, budget["steps_per_rollout"], cfg.algo.train_batch_size,
             describe_generation(settings.generation),
             describe_generation(settings.val_generation))  # fmt: skip
    module = GRPOModule(
        policy, processor, reward_fn=functools.partial(reward, **params),
        instructions=instructions_of(cfg), system_prompt=cfg.system_prompt,
        settings=settings, **optimizer_factories(cfg.algo.optim), ref_model=ref,
        refill_records=train, samples=SampleLog(out / "grpo_samples.jsonl"),
    )  # fmt: skip
    loader = EpochBatches(train, cfg.algo.prompts_per_step, seed=cfg.seed,
                          position=lambda: module.rollouts)  # fmt: skip
    val_loader = DataLoader(val, batch_size=16, collate_fn=list)
    start = time.time()
    trainer.fit(module, loader, val_loader, ckpt_path=resume_path(trainer))
    wall = time.time() - start
    save_trained(trainer, module.model, processor, out / CHECKPOINT)
    summary = {
        "rollouts": module.rollouts,
        "optimizer_steps": trainer.global_step,
        "wall_s": wall,
        "skipped_images": module.skipped_images,
        "completions": module.completions * trainer.world_size,  # this rank's x ranks
        "device": trainer_device(trainer),
        **{k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    if trainer.is_global_zero:
        (out / CHECKPOINT / "train_summary.json").write_text(json.dumps(summary, indent=2))
    finish_logging(trainer.logger)
    log.info("GRPO: %d rollouts, %d optimiser steps in %.0f s; checkpoint %s", module.rollouts,
             trainer.global_step, wall, out / CHECKPOINT)  # fmt: skip
    return summary
