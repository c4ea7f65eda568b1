"""modules/optim.py: the warmup-cosine schedule over plain parameters and param groups."""

import pytest
import torch

from omniquality_r.modules.optim import optimizer_with_schedule, warmup_cosine


def test_warmup_then_cosine_to_min_ratio():
    assert [warmup_cosine(s, 10, 2) for s in (0, 1)] == [0.5, 1.0]
    assert warmup_cosine(6, 10, 2) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos = 0
    assert warmup_cosine(10, 10, 2) == pytest.approx(0.1)


def test_param_groups_keep_their_own_lr_under_the_schedule_and_frozen_ones_are_left_out(
    adamw_cosine,
):
    tower, head, frozen = (torch.nn.Linear(2, 2) for _ in range(3))
    frozen.requires_grad_(False)
    groups = [{"params": tower.parameters(), "lr": 0.3}, {"params": head.parameters()},
              {"params": frozen.parameters()}]  # fmt: skip
    optim = adamw_cosine(1.0, warmup_ratio=0.2)  # conf/optim/adamw_cosine.yaml
    out = optimizer_with_schedule(groups, **optim, total_steps=10)
    optimizer, scheduler = out["optimizer"], out["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.95)
    assert len(optimizer.param_groups) == 2
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(0.15), pytest.approx(0.5)]
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(0.3), pytest.approx(1.0)]
    with pytest.raises(ValueError, match="no trainable"):
        optimizer_with_schedule(frozen.parameters(), **optim, total_steps=10)
