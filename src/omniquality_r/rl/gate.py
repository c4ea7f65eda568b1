"""Entropy gate: train only on the high-entropy ("forking") tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GATE_MODES = ("sequence", "batch")


def token_entropy(logits: Tensor, chunk_size: int = 128) -> Tensor:
    """H[b, t] = -sum_v p log p with log p = log_softmax(logits[b, t]) in float32, shape [B, T].

    Works on `chunk_size` positions of T at a time, so only [B, chunk, V] float32
    temporaries exist at once (logits may be bf16).
    """
    out = []
    for chunk in logits.split(chunk_size, dim=1):
        logp = F.log_softmax(chunk.float(), dim=-1)
        out.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(out, dim=1)


def entropy_gate(
    entropy: Tensor, mask: Tensor, rho: float = 0.2, mode: str = "sequence",
    pool: Tensor | None = None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(keep [B, T] bool, kept fraction of valid tokens) selecting the top-rho tokens by entropy.

    "sequence": per row, the k = ceil(rho * T_valid) valid tokens of highest entropy; ties go
    to the earlier position (stable sort), so exactly k are kept. "batch": valid tokens with
    H >= torch.quantile(pool, 1 - rho) (linear interpolation), as TRL's
    `get_high_entropy_mask` with top_entropy_quantile = rho; `pool` holds the valid-token
    entropies the quantile is taken over (the whole rollout, every rank), default H[valid].
    """
    valid = mask.bool()
    if mode == "sequence":
        n_valid = valid.sum(-1, dtype=torch.float64)
        k = torch.ceil(rho * n_valid - 1e-9)  # tolerance: 0.7 * 10 is 7.000000000000001 in floats
        scores = entropy.float().masked_fill(~valid, float("-inf"))
        order = scores.argsort(dim=-1, descending=True, stable=True)
        positions = torch.arange(order.size(-1), device=order.device).expand_as(order)
        rank = torch.empty_like(order).scatter_(-1, order, positions)  # rank[b, order[b, r]] = r
        keep = (rank < k.unsqueeze(-1)) & valid
    elif mode == "batch":
        values = (entropy[valid] if pool is None else pool).float()
        if values.numel() == 0:
            keep = torch.zeros_like(valid)
        else:
            keep = (entropy >= torch.quantile(values, 1 - rho)) & valid
    else:
        raise ValueError(f"unknown gate mode {mode!r}; expected one of {GATE_MODES}")
    return keep, keep.sum() / valid.sum().clamp(min=1)
