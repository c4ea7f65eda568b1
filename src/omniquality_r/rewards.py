"""Rollout rewards, each split into a format part and an accuracy part.

Every reward shares one signature

    fn(completions: list[str], mos: Tensor[N], group_ids: Tensor[N], datasets: list[str],
       **params) -> RewardParts

where row n is one completion, `mos[n]` the ground truth of its image on [0, 5],
`group_ids[n]` which prompt (image) it was sampled for and `datasets[n]` the
image's dataset name. Only `fidelity` reads `group_ids` (and `datasets`, to pair
images within a dataset). Answers are read with `prompts.format_ok` and
`prompts.parse_answer`; s_hat below is the parsed answer, "unparsable" means
`parse_answer` returned None. `REWARDS` maps a config name to its function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch import Tensor

from omniquality_r.prompts import format_ok, parse_answer


class RewardParts(NamedTuple):
    """Per-completion format and accuracy rewards, shape [N] each."""

    format: Tensor
    accuracy: Tensor

    @property
    def total(self) -> Tensor:
        """r = r_format + r_accuracy."""
        return self.format + self.accuracy


def _read(completions: list[str], mos: Tensor, format_weight: float) -> tuple[Tensor, Tensor]:
    """(r_format, s_hat): format_weight where `format_ok`, else 0; s_hat NaN when unparsable."""
    if len(completions) != mos.numel():
        raise ValueError(f"{len(completions)} completions but {mos.numel()} MOS values")
    fmt = torch.tensor([format_weight * format_ok(c) for c in completions], dtype=mos.dtype)
    parsed = [parse_answer(c) for c in completions]
    pred = torch.tensor([math.nan if p is None else p for p in parsed], dtype=mos.dtype)
    return fmt.to(mos.device), pred.to(mos.device)


def _width(
    datasets: list[str], base: float, scale: Mapping[str, float] | None, like: Tensor
) -> Tensor:
    """Kernel width per completion: base * scale.get(dataset, 1.0)."""
    widths = [base * (scale or {}).get(d, 1.0) for d in datasets]
    return torch.tensor(widths, dtype=like.dtype).to(like.device)


def gaussian_reward(
    completions: list[str],
    mos: Tensor,
    group_ids: Tensor,
    datasets: list[str],
    *,
    sigma: float = 0.8,
    sigma_scale: Mapping[str, float] | None = None,
    format_weight: float = 0.5,
) -> RewardParts:
    """OmniQuality-R default: r_acc = exp(-(s_hat - s)^2 / (2 sigma_d^2)), 0 when unparsable.

    sigma_d = sigma * sigma_scale.get(dataset, 1); the authors' multipliers (off by default)
    are {"ava": 1.5, "evalmuse": 1.5, "koniq": 0.8}. r_format = format_weight (0.5) or 0.
    """
    fmt, pred = _read(completions, mos, format_weight)
    width = _width(datasets, sigma, sigma_scale, mos)
    acc = torch.exp(-((pred - mos) ** 2) / (2 * width**2))
    return RewardParts(fmt, acc.nan_to_num(0.0))


def laplace_reward(
    completions: list[str],
    mos: Tensor,
    group_ids: Tensor,
    datasets: list[str],
    *,
    b: float = 0.8,
    b_scale: Mapping[str, float] | None = None,
    format_weight: float = 0.5,
) -> RewardParts:
    """Laplace kernel: r_acc = exp(-|s_hat - s| / b_d), 0 when unparsable; b_d as sigma_d above."""
    fmt, pred = _read(completions, mos, format_weight)
    width = _width(datasets, b, b_scale, mos)
    acc = torch.exp(-(pred - mos).abs() / width)
    return RewardParts(fmt, acc.nan_to_num(0.0))


def threshold_reward(
    completions: list[str],
    mos: Tensor,
    group_ids: Tensor,
    datasets: list[str],
    *,
    threshold: float = 0.35,
    format_weight: float = 1.0,
) -> RewardParts:
    """Q-Insight: r_acc = 1 if |s_hat - s| < threshold (0.35) else 0; r_format = 1.0 or 0."""
    fmt, pred = _read(completions, mos, format_weight)
    acc = ((pred - mos).abs() < threshold).to(mos.dtype)  # NaN < t is False: unparsable -> 0
    return RewardParts(fmt, acc)


def neg_abs_error_reward(
    completions: list[str],
    mos: Tensor,
    group_ids: Tensor,
    datasets: list[str],
    *,
    max_error: float = 5.0,
    format_weight: float = 0.5,
) -> RewardParts:
    """r_acc = -min(|s_hat - s|, max_error); unparsable gets -max_error.

    max_error = 5 is the largest error on the [0, 5] scale, so an unparsable answer
    scores exactly as badly as the worst parsed one, and never better.
    """
    fmt, pred = _read(completions, mos, format_weight)
    acc = -(pred - mos).abs().nan_to_num(max_error).clamp(max=max_error)
    return RewardParts(fmt, acc)


def fidelity_reward(
    completions: list[str],
    mos: Tensor,
    group_ids: Tensor,
    datasets: list[str],
    *,
    eps: float = 1e-6,
    within_dataset: bool = True,
    format_weight: float = 0.5,
) -> RewardParts:
    """VisualQuality-R1 (arXiv 2505.14460) ranking reward over the images of the batch.

    Per image i: mu_i, var_i = mean and unbiased variance of its parsed scores (var 0 when
    fewer than two parse). For completion k of image i and every other image j:

        p_kj  = Phi((s_hat_k - mu_j) / sqrt(var_i + var_j + eps))      (Thurstone, Phi = N(0,1) cdf)
        p*_ij = 1 if mos_i > mos_j, 0.5 if equal, 0 otherwise
        r_acc(k) = mean_{j != i} [ sqrt(p*_ij p_kj) + sqrt((1 - p*_ij)(1 - p_kj)) ]

    Opponents j are the images with at least one parsed score (and, when `within_dataset`,
    the same dataset: MOS scales of different datasets are not comparable). r_acc = 0 for an
    unparsable completion or one with no opponent. r_format = format_weight or 0. The formula
    follows the paper (Sec. 3); their code was not available to check, so the unbiased variance,
    eps = 1e-6, the handling of unparsable answers and `within_dataset` are our choices.
    """
    fmt, pred = _read(completions, mos, format_weight)
    images, img = torch.unique(group_ids.to(mos.device), return_inverse=True)  # img: [N] -> image
    ok = ~pred.isnan()
    zero = torch.zeros(images.numel(), dtype=mos.dtype, device=mos.device)
    count = zero.index_add(0, img, ok.to(mos.dtype))
    mean = zero.index_add(0, img, pred.nan_to_num(0.0)) / count  # NaN for images with no parse
    sq_dev = torch.where(ok, pred - mean[img], 0.0) ** 2
    var = (zero.index_add(0, img, sq_dev) / (count - 1)).where(count > 1, 0.0)
    img_mos = zero.scatter(0, img, mos)  # all completions of one image share its MOS
    ds_index = {d: i for i, d in enumerate(dict.fromkeys(datasets))}
    ds = torch.tensor([ds_index[d] for d in datasets], device=mos.device)
    img_ds = torch.zeros_like(zero, dtype=ds.dtype).scatter(0, img, ds)

    z = (pred[:, None] - mean[None, :]) / torch.sqrt(var[img][:, None] + var[None, :] + eps)
    p = 0.5 * (1 + torch.erf(z / math.sqrt(2)))  # [N, images]
    gt = (mos[:, None] > img_mos[None, :]).to(mos.dtype) + 0.5 * (mos[:, None] == img_mos[None, :])
    fid = torch.sqrt(gt * p) + torch.sqrt((1 - gt) * (1 - p))
    other = img[:, None] != torch.arange(images.numel(), device=mos.device)[None, :]
    opponent = other & (count > 0)[None, :] & ok[:, None]
    if within_dataset:
        opponent &= ds[:, None] == img_ds[None, :]
    acc = torch.where(opponent, fid, 0.0).sum(1) / opponent.sum(1).clamp(min=1)
    return RewardParts(fmt, acc)


Reward = Callable[..., RewardParts]

REWARDS: dict[str, Reward] = {
    "gaussian": gaussian_reward,
    "laplace": laplace_reward,
    "threshold": threshold_reward,
    "neg_abs_error": neg_abs_error_reward,
    "fidelity": fidelity_reward,
}
