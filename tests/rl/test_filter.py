import pytest
import torch

from omniquality_r.rl.filter import std_filter


@pytest.mark.parametrize(
    ("acc", "min_std", "keep"),
    [
        # unbiased stds: 0, 2.89e-4, 0.57735 -> only the last exceeds 0.001
        ([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5005], [0.0, 1.0, 0.0]], 0.001, [False, False, True]),
        # std of [0, 1, 2] is exactly 1: "<= min_std" drops it; [-2, 2, 0] has std 2: kept
        ([[0.0, 1.0, 2.0], [-2.0, 2.0, 0.0]], 1.0, [False, True]),
        # unbiased std of [0, 1] is 0.7071 (the population std would be 0.5)
        ([[0.0, 1.0]], 0.6, [True]),
    ],
)
def test_std_filter_hand_values(acc, min_std, keep):
    mask, dropped = std_filter(torch.tensor(acc), min_std)
    assert mask.tolist() == keep
    torch.testing.assert_close(dropped, torch.tensor(1 - sum(keep) / len(keep)))


def test_std_filter_needs_groups():
    with pytest.raises(ValueError, match="G >= 2"):
        std_filter(torch.zeros(4, 1))
