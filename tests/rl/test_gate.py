import math
from types import SimpleNamespace

import pytest
import torch

from omniquality_r.rl.gate import entropy_gate, token_entropy

ENTROPY = torch.tensor([[1.0, 3.0, 2.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
MASK = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]).bool()


def test_token_entropy_hand_value():
    # p = [1/4, 3/4]: H = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.346574 + 0.215762 = 0.562335
    # uniform over 4: H = ln 4 = 1.386294
    logits = torch.tensor([[[math.log(1), math.log(3), -1e4, -1e4], [0.0, 0.0, 0.0, 0.0]]])
    torch.testing.assert_close(token_entropy(logits), torch.tensor([[0.562335, 1.386294]]))


def test_token_entropy_chunking_and_dtype():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    torch.testing.assert_close(token_entropy(logits, chunk_size=3), token_entropy(logits, 128))
    out = token_entropy(logits.bfloat16(), chunk_size=2)
    assert out.dtype == torch.float32 and out.shape == (2, 7)


def test_token_entropy_matches_trl():
    entropy_from_logits = pytest.importorskip("trl.trainer.utils").entropy_from_logits
    torch.manual_seed(1)
    logits = torch.randn(3, 9, 50) * 3
    torch.testing.assert_close(token_entropy(logits, 4), entropy_from_logits(logits, chunk_size=5))


@pytest.mark.parametrize(
    ("mode", "kept", "fraction"),
    [
        # row 0: T_valid 4, k = ceil(0.5*4) = 2 -> the two 3.0s (t1, t3)
        # row 1: T_valid 3, k = ceil(1.5) = 2, all tied at 5 -> the earliest two (t0, t1)
        ("sequence", [[0, 1, 0, 1, 0], [1, 1, 0, 0, 0]], 4 / 7),
        # valid entropies sorted [1, 2, 3, 3, 5, 5, 5]: 0.5-quantile at index 0.5*6 = 3 -> 3.0;
        # keep H >= 3 among valid tokens
        ("batch", [[0, 1, 0, 1, 0], [1, 1, 1, 0, 0]], 5 / 7),
    ],
)
def test_entropy_gate_hand_values(mode, kept, fraction):
    keep, frac = entropy_gate(ENTROPY, MASK, rho=0.5, mode=mode)
    assert keep.dtype == torch.bool
    assert keep.int().tolist() == kept
    torch.testing.assert_close(frac, torch.tensor(fraction))


@pytest.mark.parametrize(
    ("rho", "n_valid", "k"), [(0.7, 10, 7), (0.2, 5, 1), (0.2, 6, 2), (0.01, 4, 1)]
)
def test_sequence_gate_keeps_ceil_rho_t(rho, n_valid, k):
    # 0.7 * 10 = 7.000000000000001 in floats: still k = 7
    entropy = torch.rand(1, 12, generator=torch.Generator().manual_seed(3))
    mask = torch.arange(12)[None, :] < n_valid
    keep, _ = entropy_gate(entropy, mask, rho=rho)
    assert keep.sum() == k and not keep[~mask].any()
    assert entropy[keep].min() >= entropy[mask & ~keep].max()


@pytest.mark.parametrize("mode", ["sequence", "batch"])
def test_entropy_gate_empty_mask(mode):
    keep, frac = entropy_gate(ENTROPY, torch.zeros_like(MASK), mode=mode)
    assert not keep.any() and frac == 0


def test_entropy_gate_unknown_mode():
    with pytest.raises(ValueError, match="gate mode"):
        entropy_gate(ENTROPY, MASK, mode="token")


@pytest.mark.parametrize("rho", [0.2, 0.5, 1.0])
def test_batch_gate_matches_trl(rho):
    """TRL 1.16.0 GRPOTrainer.get_high_entropy_mask(entropies, mask, 1 - top_entropy_quantile)."""
    grpo = pytest.importorskip("trl.trainer.grpo_trainer")
    single_process = SimpleNamespace(
        accelerator=SimpleNamespace(pad_across_processes=lambda t, **_: t, gather=lambda t: t)
    )
    torch.manual_seed(2)
    entropy = torch.rand(4, 16) * 3
    mask = torch.arange(16)[None, :] < torch.tensor([[16], [9], [3], [12]])
    trl = grpo.GRPOTrainer.get_high_entropy_mask(single_process, entropy, mask, 1 - rho)
    keep, _ = entropy_gate(entropy, mask, rho=rho, mode="batch")
    assert torch.equal(keep, trl)
