import pytest
import torch

from omniquality_r.rl.advantage import group_advantages, kl_penalized_advantages

REWARDS = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    ("std", "expected"),
    [
        # group means [2, 0]; unbiased group stds [1, 0]
        ("group", [[-1 / 1.0001, 0.0, 1 / 1.0001], [0.0, 0.0, 0.0]]),
        # batch: mean 1, squared deviations 0+1+4+1+1+1 = 8, unbiased var 8/5 -> std 1.264911
        ("batch", [[-1 / 1.265011, 0.0, 1 / 1.265011], [0.0, 0.0, 0.0]]),
        # Dr. GRPO: centred only
        ("none", [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]),
    ],
)
def test_group_advantages_hand_values(std, expected):
    torch.testing.assert_close(group_advantages(REWARDS, std=std), torch.tensor(expected))


@pytest.mark.parametrize("bad", [torch.zeros(3, 1), torch.zeros(6)])
def test_group_advantages_needs_groups(bad):
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(bad)


def test_group_advantages_unknown_mode():
    with pytest.raises(ValueError, match="std mode"):
        group_advantages(REWARDS, std="max")


@pytest.mark.parametrize("std", ["group", "batch", "none"])
def test_group_advantages_match_trl(std):
    """TRL 1.16.0 grpo_trainer.py L2765-2787 (sum_then_normalize), with TRL's own nanstd."""
    nanstd = pytest.importorskip("trl.trainer.utils").nanstd
    torch.manual_seed(0)
    rewards = torch.rand(4, 8)
    flat, g = rewards.flatten(), rewards.size(1)
    mean_grouped = torch.nanmean(flat.view(-1, g), dim=1).repeat_interleave(g, dim=0)
    if std == "batch":
        std_rewards = nanstd(flat).expand_as(flat)
    else:
        std_rewards = nanstd(flat.view(-1, g), dim=1).repeat_interleave(g, dim=0)
    trl = flat - mean_grouped
    if std != "none":
        trl = trl / (std_rewards + 1e-4)
    torch.testing.assert_close(group_advantages(rewards, std=std).flatten(), trl)


def test_kl_penalized_advantages_hand_values():
    # ref_logp = 0, so k1 = logp; the last token is padding
    logp = torch.tensor([[0.1, -0.2, 0.3, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    out = kl_penalized_advantages(torch.tensor([2.0]), logp, torch.zeros(1, 4), mask, beta=0.5)
    # KL still to come: t0 0.1-0.2+0.3 = 0.2, t1 0.1, t2 0.3, pad 0
    # A_t = 2 - 0.5 * [0.2, 0.1, 0.3] = [1.9, 1.95, 1.85], pad -> 0
    torch.testing.assert_close(out, torch.tensor([[1.9, 1.95, 1.85, 0.0]]))


def test_kl_penalized_advantages_match_openrlhf_procedure():
    """OpenRLHF compute_reward (A_i on the last valid token, -beta*k1 everywhere) followed by
    get_cumulative_returns (masked, gamma = 1), written out literally."""
    torch.manual_seed(1)
    b, t, beta = 3, 6, 0.1
    adv, logp, ref = torch.randn(b), torch.randn(b, t), torch.randn(b, t)
    mask = torch.arange(t)[None, :] < torch.tensor([[6], [4], [1]])
    eos = t - 1 - mask.long().fliplr().argmax(dim=1, keepdim=True)
    reward = torch.zeros(b, t).scatter(1, eos, adv[:, None]) - beta * (logp - ref)
    reward = reward * mask
    returns, running = torch.zeros(b, t), torch.zeros(b)
    for step in reversed(range(t)):
        running = reward[:, step] + running
        returns[:, step] = running
    ours = kl_penalized_advantages(adv, logp, ref, mask, beta)
    torch.testing.assert_close(ours, returns * mask)
