"""Mini-batches of a rollout: several optimiser steps per rollout, as the authors' OpenRLHF
recipe (64 prompts x 16 samples per rollout, 64 samples per optimiser step: 16 steps).

A mini-batch is `rows_per_batch` samples (the authors' unit, so 64 samples over 8 ranks is 8
per rank: half a group); the order shuffles whole groups and keeps a group's samples
together, so a mini-batch holds few partial groups and the loss pass still runs each prompt
once for its samples (rl/rollout.completion_logits). Advantages were computed per group
before. Within a mini-batch, micro-batches (memory) are weighted by `batch_share` so their
gradients add up to the mini-batch's aggregate loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .loss import AGGREGATIONS


def mini_batches(
    n_groups: int, group_size: int, rows_per_batch: int, generator: torch.Generator
) -> list[list[int]]:
    """The rows (p * G + g) of the groups in a random order of groups, cut into consecutive
    mini-batches of `rows_per_batch` rows (the last one may be smaller): one optimiser step
    each."""
    if rows_per_batch < 1:
        raise ValueError(f"rows_per_batch must be >= 1, got {rows_per_batch}")
    order = torch.randperm(n_groups, generator=generator).tolist()
    rows = [p * group_size + g for p in order for g in range(group_size)]
    return [rows[i : i + rows_per_batch] for i in range(0, len(rows), rows_per_batch)]


def batch_share(micro_mask: Tensor, batch_mask: Tensor, aggregation: str) -> float:
    """The weight w of a micro-batch's aggregate loss in its mini-batch's, so that
    sum_micro w * aggregate(micro) = aggregate(mini-batch) (rl/loss.aggregate):
    sequences B_micro / B_batch (seq_mean_token_mean, fixed_length) or loss tokens
    sum(m_micro) / sum(m_batch) (token_mean). Masks are the loss masks [B, T]."""
    if aggregation == "token_mean":
        return float(micro_mask.bool().sum()) / max(float(batch_mask.bool().sum()), 1.0)
    if aggregation in AGGREGATIONS:
        return micro_mask.shape[0] / batch_mask.shape[0]
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
