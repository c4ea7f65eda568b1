"""Encode records as chat inputs, generate responses, and read scores out of them.

One path for every stage that asks the model for a score (eval, scoring, GRPO
rollouts): `encode_prompts` -> `model.generate` -> `read_scores`; `score_items` is that
path for one batch (eval and the scoring API), returning a ScoredBatch.

Read-outs (`read_scores`):
  greedy       the float parsed from the generated `<answer>` text (the paper's way).
  expectation  a probability-weighted read of the answer's digits, as Q-Align reads
               its level tokens: s = E[d0] + E[d1] / 10 + E[d2] / 100, where d0 is the
               answer's first digit (distribution renormalised over 0-5) and d1, d2
               the two decimals (over 0-9), each taken from the policy's next-token
               distribution at that position of the generated sequence (one
               teacher-forced forward pass), clipped to prompts.SCORE_RANGE (a first
               digit 5 with decimals is not a score). NaN when the answer is not `d.dd`
               or is invalid (prompts.read_answer), as for greedy.
Generation in eval and scoring stops a looping answer early (RepetitionStop, the decoding
config's `repetition_stop`); each batch reports which answers it stopped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList

from .models.shared_prefix import image_features
from .prompts import SCORE_RANGE, build_messages, parse_answer, read_answer
from .rl.rollout import completion_logits

READOUTS = ("greedy", "expectation")
_DIGITS_RE = re.compile(r"\d\.\d\d")


@dataclass(frozen=True)
class PromptSpec:
    """What the model is asked about one image."""

    image: Image.Image
    task: str
    prompt: str = ""


def encode_prompts(
    processor, items: Sequence[PromptSpec], instructions: dict[str, str], system_prompt: str
) -> dict[str, torch.Tensor]:
    """Chat-template and tokenize a batch, left-padded for generation."""
    texts = [
        processor.apply_chat_template(
            build_messages(it.task, instructions, system_prompt, it.prompt),
            add_generation_prompt=True,
            tokenize=False,
        )
        for it in items
    ]
    processor.tokenizer.padding_side = "left"
    return processor(
        text=texts, images=[it.image for it in items], padding=True, return_tensors="pt"
    )


class RepetitionStop(StoppingCriteria):
    """Stops a sequence whose last `window` generated tokens repeat one pattern of at most
    `max_period` tokens (t_i = t_{i-p} for every i of the window, some p <= max_period), e.g.
    `2.6655555...` or `abab...`: a looping answer ends instead of running to max_new_tokens.
    Padding and eos (finished rows) never count; `fired` marks the rows it stopped."""

    def __init__(self, prompt_len: int, window: int, ignore_ids: Sequence[int],
                 max_period: int = 8):  # fmt: skip
        self.prompt_len, self.window, self.max_period = prompt_len, window, max_period
        self.ignore = torch.tensor(sorted(set(ignore_ids)))
        self.fired: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        new = input_ids[:, self.prompt_len :]
        if self.fired is None:
            self.fired = torch.zeros(len(new), dtype=torch.bool, device=new.device)
        tail = new[:, -self.window :]
        periodic = torch.zeros_like(self.fired)
        for p in range(1, self.max_period + 1):
            if new.shape[1] >= self.window + p:
                periodic |= (tail == new[:, -self.window - p : -p]).all(dim=1)
        clean = ~torch.isin(tail, self.ignore.to(tail.device)).any(dim=1)
        self.fired |= periodic & clean
        return self.fired.clone()


@torch.no_grad()
def generate(model, processor, inputs: dict, generation: dict,
             stopping: Sequence[StoppingCriteria] = ()) -> torch.Tensor:  # fmt: skip
    """Generate completions (KV cache on); returns the new token ids, right-padded with pad."""
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    tok = processor.tokenizer
    extra = {"stopping_criteria": StoppingCriteriaList(stopping)} if stopping else {}
    out = model.generate(**inputs, **generation, **extra, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)  # fmt: skip
    return out[:, inputs["input_ids"].shape[1] :]


def completion_mask(completion_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 for completion tokens up to and including the first eos, 0 after it."""
    is_eos = completion_ids == eos_token_id
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return (~after_eos).long()


def decode(processor, completion_ids: torch.Tensor) -> list[str]:
    mask = completion_mask(completion_ids, processor.tokenizer.eos_token_id)
    return [
        processor.tokenizer.decode(ids[m.bool()], skip_special_tokens=True)
        for ids, m in zip(completion_ids, mask)
    ]


def _answer_digit_positions(tokenizer, ids: list[int]) -> list[int] | None:
    """Indices of the three tokens d, d, d of an answer `d.dd` after the last `<answer>`."""
    pieces = [tokenizer.decode([i]) for i in ids]
    text, starts = "", []
    for p in pieces:
        starts.append(len(text))
        text += p
    at = text.rfind("<answer>")
    if at < 0:
        return None
    at += len("<answer>")
    while at < len(text) and text[at].isspace():
        at += 1
    if not _DIGITS_RE.fullmatch(text[at : at + 4]):
        return None
    char_pos = [at, at + 2, at + 3]
    token_of = {s: i for i, s in enumerate(starts)}
    if not all(c in token_of and len(pieces[token_of[c]]) == 1 for c in char_pos):
        return None
    return [token_of[c] for c in char_pos]


@torch.no_grad()
def expectation_scores(model, processor, inputs: dict, completion_ids: torch.Tensor) -> list[float]:
    """The `expectation` read-out (module docstring) from one teacher-forced pass."""
    tok = processor.tokenizer
    digit_ids = torch.tensor([tok.convert_tokens_to_ids(str(d)) for d in range(10)])
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    completion_ids = completion_ids.to(model.device)
    mask = completion_mask(completion_ids, tok.eos_token_id)
    logits = completion_logits(model, inputs, image_features(model, inputs), 1, completion_ids,
                               mask)  # fmt: skip
    probs = logits.float().softmax(-1)[..., digit_ids.to(model.device)]
    scores = []
    for b in range(completion_ids.shape[0]):
        n = int(mask[b].sum())
        pos = _answer_digit_positions(tok, completion_ids[b, :n].tolist())
        if pos is None:
            scores.append(math.nan)
            continue
        first = probs[b, pos[0], :6] / probs[b, pos[0], :6].sum()
        tenths, hundredths = (probs[b, p] / probs[b, p].sum() for p in pos[1:])
        weights = torch.arange(10, device=probs.device, dtype=probs.dtype)
        value = (
            (first * weights[:6]).sum()
            + (tenths * weights).sum() / 10
            + (hundredths * weights).sum() / 100
        )
        scores.append(min(float(value), SCORE_RANGE[1]))
    return scores


def read_scores(
    responses: Sequence[str],
    readout: str,
    *,
    model=None,
    processor=None,
    inputs: dict | None = None,
    completion_ids: torch.Tensor | None = None,
) -> list[float]:
    """Scores for generated responses by `readout` (see module docstring); NaN where the
    answer is invalid (prompts.read_answer), whatever the read-out."""
    if readout not in READOUTS:
        raise ValueError(f"unknown read-out {readout!r}; expected one of {READOUTS}")
    greedy = [math.nan if (s := parse_answer(r)) is None else s for r in responses]
    if readout == "greedy":
        return greedy
    expected = expectation_scores(model, processor, inputs, completion_ids)
    return [e if math.isfinite(g) else math.nan for g, e in zip(greedy, expected)]


@dataclass
class ScoredBatch:
    """One batch: the responses, their scores per read-out (NaN when invalid), why each
    answer is invalid (prompts.INVALID; "" when valid), and whether the repetition guard
    stopped its generation."""

    responses: list[str]
    scores: dict[str, list[float]]
    invalid: list[str]
    looped: list[bool]


def score_items(
    model,
    processor,
    items: Sequence[PromptSpec],
    *,
    instructions: dict[str, str],
    system_prompt: str,
    generation: dict,
    readouts: Sequence[str] = ("greedy",),
) -> ScoredBatch:
    """Generate and read one batch. `generation` holds model.generate's settings plus
    `repetition_stop` (the RepetitionStop window in tokens; absent or null: off)."""
    generation = dict(generation)
    window = generation.pop("repetition_stop", None)
    inputs = encode_prompts(processor, items, instructions, system_prompt)
    tok = processor.tokenizer
    guard = window and RepetitionStop(inputs["input_ids"].shape[1], window,
                                      [tok.pad_token_id, tok.eos_token_id])  # fmt: skip
    completion_ids = generate(model, processor, inputs, generation, [guard] if guard else ())
    responses = decode(processor, completion_ids)
    scores = {
        r: read_scores(responses, r, model=model, processor=processor, inputs=inputs,
                       completion_ids=completion_ids)
        for r in readouts
    }  # fmt: skip
    looped = guard.fired.tolist() if guard and guard.fired is not None else [False] * len(items)
    return ScoredBatch(responses, scores, [read_answer(r).invalid for r in responses], looped)
