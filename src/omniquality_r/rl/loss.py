"""PPO-clip policy loss for GRPO, its token aggregations, and per-token KL estimators.

Shapes: B sequences, T completion tokens; `mask` [B, T] (bool or 0/1) marks the tokens
that count (valid tokens, optionally AND the entropy gate). Values at masked-out positions
are ignored in the forward pass but should be finite so no NaN reaches the gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

AGGREGATIONS = ("seq_mean_token_mean", "token_mean", "fixed_length")


def masked_mean(
    values: Tensor, mask: Tensor, dim: int | None = None, normalizer: float | None = None
) -> Tensor:
    """sum(values over mask, dim) / (normalizer, or the mask count clamped to >= 1)."""
    m = mask.bool()
    total = torch.where(m, values, 0).sum(dim=dim)
    if normalizer is None:
        return total / m.sum(dim=dim).clamp(min=1)
    return total / normalizer


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    aggregation: str = "seq_mean_token_mean",
    max_len: int | None = None,
) -> Tensor:
    """Reduce a [B, T] per-token loss to a scalar.

    seq_mean_token_mean: mean_b (sum_t m l / sum_t m)   (GRPO; TRL loss_type="grpo")
    token_mean:          sum_bt m l / sum_bt m           (DAPO; TRL "bnpo")
    fixed_length:        sum_bt m l / (B * max_len)      (Dr. GRPO; TRL "dr_grpo")
    """
    if aggregation == "seq_mean_token_mean":
        return masked_mean(per_token, mask, dim=-1).mean()
    if aggregation == "token_mean":
        return masked_mean(per_token, mask)
    if aggregation == "fixed_length":
        if max_len is None:
            raise ValueError("aggregation 'fixed_length' needs max_len")
        return masked_mean(per_token, mask, normalizer=per_token.size(0) * max_len)
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    ratio_max: float | None = 3.0,
    aggregation: str = "seq_mean_token_mean",
    max_len: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate l = -min(r' A, clip(r', 1 - eps_low, 1 + eps_high) A), aggregated.

    r = exp(logp - old_logp), r' = min(r, ratio_max) (None: no cap); `advantages` is [B] or
    per-token [B, T]. With ratio_max > 1 + eps_high the cap only changes tokens with A < 0 and
    r > ratio_max, whose loss becomes -ratio_max * A with zero gradient: exactly OpenRLHF's
    dual clip (-max(min(r A, clip(r) A), c A) for A < 0, c = ratio_max) and TRL's `delta`.
    Stats (token means over mask, no grad): clip_low = P(r < 1 - eps_low, A < 0),
    clip_high = P(r > 1 + eps_high, A > 0) (TRL's definitions), capped = P(r > ratio_max,
    A < 0), clip_frac = clip_low + clip_high (the tokens the clip takes out of the gradient),
    ratio_mean = mean r.
    """
    if ratio_max is not None and ratio_max <= 1 + eps_high:
        raise ValueError(f"ratio_max {ratio_max} must exceed 1 + eps_high = {1 + eps_high}")
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages
    ratio = torch.exp(logp - old_logp)
    capped = ratio if ratio_max is None else ratio.clamp(max=ratio_max)
    per_token = -torch.min(capped * adv, capped.clamp(1 - eps_low, 1 + eps_high) * adv)
    loss = aggregate(per_token, mask, aggregation, max_len)
    with torch.no_grad():
        cap = float("inf") if ratio_max is None else ratio_max
        low = masked_mean(((ratio < 1 - eps_low) & (adv < 0)).float(), mask)
        high = masked_mean(((ratio > 1 + eps_high) & (adv > 0)).float(), mask)
        stats = {
            "clip_low": low, "clip_high": high, "clip_frac": low + high,
            "capped": masked_mean(((ratio > cap) & (adv < 0)).float(), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp - ref_logp (the authors' reward penalty; unbiased, can be negative)."""
    return logp - ref_logp


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(ref - logp) - (ref - logp) - 1 >= 0 (Schulman; TRL's KL loss term)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1
