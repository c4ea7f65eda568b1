"""Mini-batches of a rollout: several optimiser steps per rollout, as the authors' OpenRLHF
recipe (64 prompts x 16 samples per rollout, 64 samples per optimiser step: 16 steps).

A rollout of N samples (over every rank, after the STD filter) takes S = ceil(N /
train_batch_size) optimiser steps per pass; each rank cuts its own samples into S near-equal
mini-batches (some may be empty: a rank whose groups were all filtered still joins every
step). The order shuffles whole groups and keeps a group's samples together, so the loss pass
still runs each prompt once for its samples (rl/rollout.completion_logits); advantages were
computed per group before. Micro-batches (memory) are weighted by `batch_share` so that their
gradients, summed over micro-batches and averaged over ranks (DDP), are those of the global
mini-batch's aggregate loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .loss import AGGREGATIONS


def steps_per_pass(n_samples: int, train_batch_size: int) -> int:
    """S = ceil(N / train_batch_size) optimiser steps for N samples (over every rank)."""
    return -(-n_samples // train_batch_size)


def mini_batches(
    n_groups: int, group_size: int, n_batches: int, generator: torch.Generator
) -> list[list[int]]:
    """The rows (p * G + g) of the groups in a random order of groups, cut into `n_batches`
    consecutive mini-batches of near-equal size (sizes differ by at most one; empty when
    there are fewer rows than batches): one optimiser step each."""
    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    order = torch.randperm(n_groups, generator=generator).tolist()
    rows = torch.tensor([p * group_size + g for p in order for g in range(group_size)],
                        dtype=torch.long)  # fmt: skip
    return [chunk.tolist() for chunk in torch.tensor_split(rows, n_batches)]


def batch_share(micro_mask: Tensor, batch_rows: int, batch_tokens: int, aggregation: str) -> float:
    """The weight w of a micro-batch's aggregate loss in its mini-batch's, so that
    sum_micro w * aggregate(micro) = aggregate(mini-batch) (rl/loss.aggregate): sequences
    B_micro / batch_rows (seq_mean_token_mean, fixed_length) or loss tokens
    sum(m_micro) / batch_tokens (token_mean); `micro_mask` is the micro-batch's loss mask
    [B, T], the batch counts are the global mini-batch's (every rank's)."""
    if aggregation == "token_mean":
        return float(micro_mask.bool().sum()) / max(batch_tokens, 1)
    if aggregation in AGGREGATIONS:
        return micro_mask.shape[0] / max(batch_rows, 1)
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
