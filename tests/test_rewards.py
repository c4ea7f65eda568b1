import math

import pytest
import torch

from omniquality_r.rewards import REWARDS, RewardParts


def answer(score: str) -> str:
    return f"<think>looks fine</think><answer>{score}</answer>"


BAD_FORMAT = "<answer>4.00</answer>"  # parses, but no <think> block
NO_ANSWER = "<think>hmm</think>"


def call(name, completions, mos, groups=None, datasets=None, **params) -> RewardParts:
    n = len(completions)
    groups = torch.arange(n) if groups is None else torch.tensor(groups)
    return REWARDS[name](
        completions, torch.tensor(mos), groups, datasets or ["koniq"] * n, **params
    )


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_shared_signature_and_parts(name):
    completions = [answer("3.00"), answer("1.00"), BAD_FORMAT, NO_ANSWER]
    parts = call(name, completions, [3.0, 3.5, 4.0, 2.0], groups=[0, 0, 1, 1])
    assert isinstance(parts, RewardParts)
    assert parts.format.shape == parts.accuracy.shape == (4,)
    torch.testing.assert_close(parts.total, parts.format + parts.accuracy)
    assert parts.format[2] == parts.format[3] == 0  # no <think>; no <answer>


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_length_mismatch_raises(name):
    with pytest.raises(ValueError, match="completions"):
        REWARDS[name]([answer("1")], torch.tensor([1.0, 2.0]), torch.tensor([0, 1]), ["a", "a"])


def test_gaussian_hand_values():
    completions = [answer("3.00"), answer("2.00"), answer("good"), BAD_FORMAT]
    parts = call("gaussian", completions, [3.0, 3.0, 3.0, 4.0])
    # r_format: 0.5 for the three well-formed answers (the non-float one too), 0 for BAD_FORMAT.
    torch.testing.assert_close(parts.format, torch.tensor([0.5, 0.5, 0.5, 0.0]))
    # exp(-(2-3)^2 / (2*0.8^2)) = exp(-0.78125) = 0.457833; "good" does not parse -> 0;
    # BAD_FORMAT parses 4.00 == mos -> 1 (accuracy is scored independently of format).
    torch.testing.assert_close(parts.accuracy, torch.tensor([1.0, 0.457833, 0.0, 1.0]))


def test_gaussian_sigma_scale():
    completions = [answer("2.00"), answer("2.00"), answer("2.00")]
    scale = {"ava": 1.5, "koniq": 0.8}
    parts = call("gaussian", completions, [3.0] * 3, datasets=["ava", "koniq", "spaq"],
                 sigma_scale=scale)
    # sigma 1.2: exp(-1/2.88) = 0.706648; sigma 0.64: exp(-1/0.8192) = exp(-1.220703) = 0.295023;
    # spaq not in the dict -> sigma 0.8: 0.457833.
    torch.testing.assert_close(parts.accuracy, torch.tensor([0.706648, 0.295023, 0.457833]))


def test_laplace_hand_values():
    parts = call("laplace", [answer("2.00"), answer("3.5"), NO_ANSWER], [3.0, 3.0, 3.0])
    # exp(-1/0.8) = 0.286505; exp(-0.5/0.8) = 0.535261; unparsable -> 0
    torch.testing.assert_close(parts.accuracy, torch.tensor([0.286505, 0.535261, 0.0]))
    torch.testing.assert_close(parts.format, torch.tensor([0.5, 0.5, 0.0]))


def test_threshold_hand_values():
    completions = [answer("3.34"), answer("3.40"), answer("2.70"), NO_ANSWER]
    parts = call("threshold", completions, [3.0] * 4)
    # |err| = 0.34 < 0.35 -> 1; 0.40 -> 0; 0.30 -> 1; unparsable -> 0. Q-Insight format reward 1.0.
    torch.testing.assert_close(parts.accuracy, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(parts.format, torch.tensor([1.0, 1.0, 1.0, 0.0]))


def test_neg_abs_error_hand_values():
    completions = [answer("3.00"), answer("2.00"), answer("12"), NO_ANSWER]
    parts = call("neg_abs_error", completions, [3.0, 3.0, 0.0, 3.0])
    # -|0| = 0; -|2-3| = -1; -min(12, 5) = -5; unparsable -> -max_error = -5
    torch.testing.assert_close(parts.accuracy, torch.tensor([0.0, -1.0, -5.0, -5.0]))


def test_fidelity_hand_values():
    # Image A (mos 3): scores 3, 2 -> mu 2.5, unbiased var 0.5.
    # Image B (mos 1): scores unparsable, 4 -> mu 4, var 0 (one parsed score).
    completions = [answer("3.00"), answer("2.00"), NO_ANSWER, answer("4.00")]
    parts = call("fidelity", completions, [3.0, 3.0, 1.0, 1.0], groups=[7, 7, 9, 9])
    # A1: z = (3-4)/sqrt(0.5) = -1.414214, Phi = 0.078650, p* = 1 -> sqrt(0.078650) = 0.280446
    # A2: z = (2-4)/sqrt(0.5) = -2.828427, Phi = 0.002339          -> sqrt(0.002339) = 0.048361
    # B1: unparsable -> 0
    # B2: z = (4-2.5)/sqrt(0.5) = 2.121320, Phi = 0.983052, p* = 0 -> sqrt(0.016947) = 0.130183
    expected = torch.tensor([0.280446, 0.048361, 0.0, 0.130183])
    torch.testing.assert_close(parts.accuracy, expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(parts.format, torch.tensor([0.5, 0.5, 0.0, 0.5]))


def test_fidelity_tie_uses_half():
    # Both images mos 2 (p* = 0.5), scores {2, 3} each: mu 2.5, var 0.5.
    # Sample "2": z = (2-2.5)/sqrt(1) = -0.5, Phi = 0.308538
    #   sqrt(0.5*0.308538) + sqrt(0.5*0.691462) = 0.392770 + 0.587993 = 0.980763
    completions = [answer("2"), answer("3"), answer("2"), answer("3")]
    parts = call("fidelity", completions, [2.0] * 4, groups=[0, 0, 1, 1])
    torch.testing.assert_close(parts.accuracy[0], torch.tensor(0.980763), atol=2e-5, rtol=0)
    torch.testing.assert_close(parts.accuracy[0], parts.accuracy[1])  # symmetric around mu


def test_fidelity_pairs_within_dataset():
    completions = [answer("3"), answer("2"), answer("1"), answer("2"), answer("5"), answer("4")]
    mos, groups = [3.0, 3.0, 1.0, 1.0, 0.5, 0.5], [0, 0, 1, 1, 2, 2]
    datasets = ["koniq"] * 4 + ["ava"] * 2
    within = call("fidelity", completions, mos, groups, datasets)
    alone = call("fidelity", completions[:4], mos[:4], groups[:4], datasets[:4])
    across = call("fidelity", completions, mos, groups, datasets, within_dataset=False)
    torch.testing.assert_close(within.accuracy[:4], alone.accuracy)
    assert not torch.allclose(across.accuracy[:4], alone.accuracy)
    # the lone AVA image has no opponent in its dataset -> 0
    torch.testing.assert_close(within.accuracy[4:], torch.zeros(2))


def test_fidelity_rewards_correct_ranking():
    # Image 0 is better (mos 4 vs 1): predicting it higher earns more than predicting it lower.
    right = call("fidelity", [answer("4"), answer("3.5"), answer("1"), answer("1.5")],
                 [4.0, 4.0, 1.0, 1.0], groups=[0, 0, 1, 1])
    wrong = call("fidelity", [answer("1"), answer("1.5"), answer("4"), answer("3.5")],
                 [4.0, 4.0, 1.0, 1.0], groups=[0, 0, 1, 1])
    assert (right.accuracy > 0.99).all() and (wrong.accuracy < 0.01).all()
    assert math.isclose(right.accuracy.mean().item() + wrong.accuracy.mean().item(), 1.0,
                        abs_tol=0.02)
