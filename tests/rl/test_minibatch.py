"""Mini-batches of a rollout and the micro-batch weights that add up to their loss."""

import pytest
import torch

from omniquality_r.rl.loss import AGGREGATIONS, aggregate, policy_loss
from omniquality_r.rl.minibatch import batch_share, mini_batches, steps_per_pass


def test_mini_batches_cut_shuffled_groups_into_near_equal_steps():
    # 3 groups of 4 (rows p*4 + g) in 2 steps: a group may straddle two steps
    batches = mini_batches(3, 4, 2, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [6, 6]
    rows = [r for b in batches for r in b]
    assert sorted(rows) == list(range(12))
    groups = [rows[i] // 4 for i in range(0, 12, 4)]  # a group's rows stay together, in order
    assert all(rows[4 * k : 4 * k + 4] == [4 * g + i for i in range(4)]
               for k, g in enumerate(groups))  # fmt: skip
    assert batches == mini_batches(3, 4, 2, torch.Generator().manual_seed(0))
    firsts = [mini_batches(3, 4, 2, torch.Generator().manual_seed(s))[0][0] for s in range(10)]
    assert len({r // 4 for r in firsts}) > 1  # the group order is shuffled
    assert [len(b) for b in mini_batches(3, 4, 5, torch.Generator())] == [3, 3, 2, 2, 2]
    assert mini_batches(0, 4, 2, torch.Generator()) == [[], []]  # a rank left with nothing
    with pytest.raises(ValueError, match="n_batches"):
        mini_batches(4, 2, 0, torch.Generator())


def test_steps_per_pass_hand_values():
    assert [steps_per_pass(n, 64) for n in (1024, 1000, 64, 65, 1)] == [16, 16, 1, 2, 1]


def test_batch_share_hand_values():
    micro = torch.tensor([[1, 1, 0], [1, 0, 0]])  # 2 sequences, 3 loss tokens
    assert batch_share(micro, 4, 6, "seq_mean_token_mean") == 2 / 4
    assert batch_share(micro, 4, 6, "fixed_length") == 2 / 4
    assert batch_share(micro, 4, 6, "token_mean") == 3 / 6
    with pytest.raises(ValueError, match="aggregation"):
        batch_share(micro, 4, 6, "sum")


def random_rollout(seed=0, b=8, t=6):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=g)
    old = logp + 0.3 * torch.randn(b, t, generator=g)
    adv = torch.randn(b, generator=g)
    mask = torch.arange(t)[None, :] < torch.randint(1, t + 1, (b, 1), generator=g)
    return logp, old, adv, mask


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_weighted_micro_batch_losses_add_up_to_the_mini_batch_loss(aggregation):
    logp, old, adv, mask = random_rollout()

    def loss(rows):
        return policy_loss(logp[rows], old[rows], adv[rows], mask[rows], aggregation=aggregation,
                           max_len=10)[0]  # fmt: skip

    whole = list(range(8))
    micros = [[0, 1, 2], [3], [4, 5, 6, 7]]
    rows, tokens = 8, int(mask.sum())
    summed = sum(loss(m) * batch_share(mask[m], rows, tokens, aggregation) for m in micros)
    torch.testing.assert_close(summed, loss(whole))


@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "fixed_length"])
def test_mean_of_equal_mini_batch_losses_is_the_full_batch_loss(aggregation):
    # One pass with the old log-probs as the current ones (no update between mini-batches).
    logp, old, adv, mask = random_rollout(seed=3)
    batches = mini_batches(4, 2, 4, torch.Generator().manual_seed(5))  # 4 groups of 2 rows
    losses = [policy_loss(logp[b], old[b], adv[b], mask[b], aggregation=aggregation,
                          max_len=10)[0] for b in batches]  # fmt: skip
    full = policy_loss(logp, old, adv, mask, aggregation=aggregation, max_len=10)[0]
    torch.testing.assert_close(torch.stack(losses).mean(), full)
    torch.testing.assert_close(
        torch.stack([aggregate(logp[b], mask[b], aggregation, 10) for b in batches]).mean(),
        aggregate(logp, mask, aggregation, 10),
    )
