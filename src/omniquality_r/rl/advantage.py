"""Group-relative advantages, and the authors' per-token k1 KL reward penalty."""

from __future__ import annotations

from torch import Tensor

from omniquality_r.rl.loss import kl_k1

STD_MODES = ("group", "batch", "none")


def group_advantages(rewards: Tensor, std: str = "group", eps: float = 1e-4) -> Tensor:
    """A[p, g] = (r[p, g] - mean_g r[p]) / (s + eps), rewards shaped [P prompts, G samples].

    s is the unbiased std of the group ("group", GRPO), of all P*G rewards ("batch"), or
    no division at all ("none", Dr. GRPO: A = r - mean_g r). Same as TRL 1.16 GRPOTrainer
    (`_generate_and_score_completions`, scale_rewards, eps 1e-4).
    """
    if rewards.dim() != 2 or rewards.size(1) < 2:
        raise ValueError(f"rewards must be [P, G] with G >= 2, got {tuple(rewards.shape)}")
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if std == "group":
        return centred / (rewards.std(dim=1, keepdim=True) + eps)
    if std == "batch":
        return centred / (rewards.std() + eps)
    if std == "none":
        return centred
    raise ValueError(f"unknown std mode {std!r}; expected one of {STD_MODES}")


def kl_penalized_advantages(
    advantages: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float
) -> Tensor:
    """Per-token advantages with the k1 KL reward penalty, as the authors' OpenRLHF fork does.

        A[i, t] = m[i, t] * (A_i - beta * sum_{t' >= t} m[i, t'] * (logp[i, t'] - ref_logp[i, t']))

    A_i [B] is the group-normalised outcome reward. OpenRLHF (group_norm estimator) puts A_i
    on the last valid token, adds -beta * k1 to every token (`compute_reward`) and takes
    undiscounted reverse cumulative sums (`get_cumulative_returns`, gamma = 1); the formula
    above is that result. `logp` are the rollout (behaviour) log-probs, no gradient.
    """
    m = mask.to(logp.dtype)
    kl = kl_k1(logp, ref_logp) * m
    kl_to_go = kl.flip(-1).cumsum(-1).flip(-1)
    return m * (advantages.unsqueeze(-1) - beta * kl_to_go)
