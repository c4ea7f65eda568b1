"""STD filter: drop prompt groups whose accuracy rewards carry no ranking signal."""

from __future__ import annotations

from torch import Tensor


def std_filter(acc_rewards: Tensor, min_std: float = 0.001) -> tuple[Tensor, Tensor]:
    """(keep [P] bool, dropped fraction) for accuracy rewards shaped [P, G >= 2].

    A group is kept when the unbiased std of its G accuracy rewards (format reward
    excluded) is > min_std, i.e. dropped when std <= min_std. Refilling is the caller's job.
    """
    if acc_rewards.dim() != 2 or acc_rewards.size(1) < 2:
        raise ValueError(f"acc_rewards must be [P, G] with G >= 2, got {tuple(acc_rewards.shape)}")
    keep = acc_rewards.std(dim=1) > min_std
    return keep, 1.0 - keep.float().mean()
