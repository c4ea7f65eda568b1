"""The optimiser and learning-rate schedule shared by SFT and GRPO (METHOD.md step 2;
conf/optim/adamw_cosine.yaml): AdamW with betas (0.9, 0.95), weight decay 0, linear warmup
then cosine decay to min_lr_ratio * lr."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.1) -> float:
    """LR multiplier: (step + 1) / warmup during warmup, then
    min_ratio + (1 - min_ratio) * 0.5 * (1 + cos(pi * progress)), progress in [0, 1]."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_ratio: float = 0.03,
    min_lr_ratio: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR of `warmup_cosine` with warmup = ceil(warmup_ratio * total_steps)
    (conf/optim: `scheduler`, instantiated with `_partial_`; total_steps comes from the stage)."""
    warmup = math.ceil(warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total_steps, warmup, min_lr_ratio)
    )


def optimizer_with_schedule(
    params,
    optimizer: Callable[[list[dict]], torch.optim.Optimizer],
    scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler],
    total_steps: int,
) -> dict:
    """Lightning's `configure_optimizers` dict: `optimizer(param_groups)` (e.g. a partial
    AdamW from conf/optim) and `scheduler(optimizer, total_steps=...)` stepped once per
    optimiser step. `params`: parameters, or param groups (dicts; a group's own "lr" follows
    the schedule too); frozen parameters are left out."""
    params = list(params)
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("no trainable parameters (everything frozen?)")
    opt = optimizer(groups)
    return {"optimizer": opt,
            "lr_scheduler": {"scheduler": scheduler(opt, total_steps=total_steps),
                             "interval": "step"}}  # fmt: skip
