"""The optimiser and learning-rate schedule shared by SFT and GRPO (METHOD.md step 2):
Adam(W) with betas (0.9, 0.95), weight decay 0, linear warmup then cosine decay to
min_ratio * lr."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.1) -> float:
    """LR multiplier: (step + 1) / warmup during warmup, then
    min_ratio + (1 - min_ratio) * 0.5 * (1 + cos(pi * progress)), progress in [0, 1]."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def adam_with_schedule(
    params,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.95),
    weight_decay: float = 0.0,
    total_steps: int,
    warmup_ratio: float = 0.03,
    min_ratio: float = 0.1,
) -> dict:
    """Lightning's `configure_optimizers` dict: AdamW + per-step warmup-cosine LambdaLR.
    `params`: parameters, or param groups (dicts; a group's own "lr" follows the schedule
    too); frozen parameters are left out."""
    params = list(params)
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("no trainable parameters (everything frozen?)")
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    warmup = math.ceil(warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total_steps, warmup, min_ratio)
    )
    return {"optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}  # fmt: skip
