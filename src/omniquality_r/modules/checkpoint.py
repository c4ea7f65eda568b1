"""Checkpoints of the training stages: the Lightning callback (conf/callbacks/default.yaml)
with what exact resume needs, and the Hugging Face folder of a trained model."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import FSDPStrategy
from peft import PeftModel

from ..decoding import sharded_generation
from ..models.loading import save_checkpoint
from ..settings import ConfigError


def rng_states() -> dict:
    """torch, CUDA, numpy and python RNG states in types a weights-only torch.load reads."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
            "python": random.getstate()}  # fmt: skip


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])


class LastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (last.ckpt every `every_n_train_steps` and on an
    interrupt) with two additions for exact resume:
    - the interval counts the module's `rollouts` when it has them (GRPO takes several
      optimiser steps per rollout, so `global_step` would jump over the multiples), else
      optimiser steps;
    - the RNG states of torch, CUDA, numpy and python, restored on resume."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        rollouts = getattr(pl_module, "rollouts", None)
        if rollouts is None:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self._every_n_train_steps
        if n < 1 or rollouts % n or self._should_skip_saving_checkpoint(trainer):
            return None
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        return None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        rng = state.pop("rng", None)
        super().load_state_dict(state)
        if rng is not None:
            set_rng_states(rng)


def shards_parameters(strategy) -> bool:
    """DeepSpeed ZeRO-3 and FSDP keep each rank's shard of the weights only."""
    return isinstance(strategy, FSDPStrategy) or bool(getattr(strategy, "zero_stage_3", False))


def generation_under(strategy, generation: dict) -> dict:
    """`generation` settings plus what the strategy needs (decoding.sharded_generation)."""
    return {**generation, **sharded_generation(shards_parameters(strategy))}


def save_trained(trainer, model, processor, path: Path) -> None:
    """The Hugging Face checkpoint of a trained model, written by rank 0 alone. Where the
    strategy shards the weights they are gathered first (every rank takes part): DeepSpeed
    ZeRO-3 through its engine's consolidated 16-bit state dict
    (stage3_gather_16bit_weights_on_model_save, set in conf/trainer), FSDP through
    Lightning's full state-dict context."""
    state = None
    if shards_parameters(trainer.strategy):
        if isinstance(model, PeftModel):
            raise ConfigError("a LoRA model under ZeRO-3/FSDP cannot be saved as one Hugging "
                              "Face folder here: use trainer=deepspeed_zero2 or ddp with LoRA")
        strategy = trainer.strategy
        full = (strategy.model._zero3_consolidated_16bit_state_dict()
                if getattr(strategy, "zero_stage_3", False)
                else strategy.lightning_module_state_dict())  # fmt: skip
        full = {k.removeprefix("_forward_module."): v for k, v in full.items()}
        state = {k.removeprefix("model."): v for k, v in full.items() if k.startswith("model.")}
    if trainer.is_global_zero:
        save_checkpoint(model, processor, path, state_dict=state)
    trainer.strategy.barrier("save_trained")
