"""The training stages' checkpoint callback (conf/callbacks/default.yaml)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


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
