"""Encode records as chat inputs, generate responses, and read scores out of them.

One path for every stage that asks the model for a score (eval, scoring, GRPO
rollouts): `encode_prompts` -> `model.generate` -> `read_scores`; `score_items` is that
path for one batch (eval and the scoring API), returning a ScoredBatch.

Read-outs (`read_scores`):
  greedy       the float parsed from the generated `<answer>` text (the paper's way).
  expectation  the expected score over the joint distribution of the answer's digits
               after the generated reasoning, as Q-Align reads its level tokens:
               E[s] = sum_d0 p(d0) (d0 + sum_d1 p(d1|d0) (d1/10 + E[d2|d0,d1]/100)),
               d0 renormalised over 0-5 and the decimals over 0-9, each distribution the
               policy's next-token one after `<answer>` (the generated reasoning and the
               branch's digits so far as context: 60 branches `d0 . d1` per answer, sharing
               the prompt and reasoning's pass), clipped to prompts.SCORE_RANGE (a 5 with
               decimals is not a score). NaN when the answer is not `d.dd` in one token
               per character or is invalid (prompts.read_answer), as for greedy.
Generation in eval and scoring stops a looping answer early (RepetitionStop, the decoding
config's `repetition_stop`); each batch reports which answers it stopped.

Several sampled answers per image (`score_items(samples=K)`, a sampling decoding config such
as conf/decoding/sample.yaml, the authors' inference): each image is encoded and its prompt
prefilled once, each answer is read out alone, and an image's score is the mean of its
valid answers (`summarize`).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from transformers import StoppingCriteria

from .models.loading import base_model
from .models.shared_prefix import image_features
from .prompts import SCORE_RANGE, build_messages, parse_answer, read_answer
from .rl.rollout import completion_logits, generate_groups, group_rows, select_prompts

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
    """`generation["num_return_sequences"]` (default 1) completions per prompt by the one
    generation path, rl/rollout.generate_groups (each image encoded and each prompt prefilled
    once; settings made explicit, decoding.py); the new token ids, right-padded with pad."""
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    generation = dict(generation)
    n = generation.pop("num_return_sequences", 1)
    return generate_groups(model, processor, inputs, image_features(model, inputs), n,
                           generation, stopping)  # fmt: skip


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
def expectation_scores(model, processor, inputs: dict, completion_ids: torch.Tensor,
                       prompt_of: Sequence[int] | None = None) -> list[float]:  # fmt: skip
    """The `expectation` read-out (module docstring): for each answer `d.dd`, the prompt and
    the completion up to `<answer>` as one prefix, run once, continued by the 60 branches
    `d0 . d1 x` (d0 in 0-5, d1 in 0-9) whose logits give p(d0), p(d1|d0) and p(d2|d0,d1).
    `prompt_of[b]`: the prompt row of completion b (default b: one completion per prompt)."""
    if prompt_of is None:
        prompt_of = range(completion_ids.shape[0])
    tok = processor.tokenizer
    digits = torch.tensor([tok.convert_tokens_to_ids(str(d)) for d in range(10)])
    mask = completion_mask(completion_ids, tok.eos_token_id)
    scores = [math.nan] * completion_ids.shape[0]
    answers = []  # (row, the completion before the first digit, the "." token)
    for b in range(completion_ids.shape[0]):
        ids = completion_ids[b, : int(mask[b].sum())].tolist()
        pos = _answer_digit_positions(tok, ids)
        if pos is not None and pos[1] == pos[0] + 2:  # "." is one token
            answers.append((b, ids[: pos[0]], ids[pos[0] + 1]))
    vocab = base_model(model).lm_head.out_features
    chunk = max(1, 2**25 // (len(BRANCHES) * 4 * vocab))  # bound the [rows, 4, V] logits
    for at in range(0, len(answers), chunk):
        part = answers[at : at + chunk]
        prefix = _prompts_with_reasoning(inputs, [(prompt_of[b], ids) for b, ids, _ in part], tok)
        prefix = {k: v.to(model.device) for k, v in prefix.items()}
        branches = torch.tensor([[digits[d0], dot, digits[d1], digits[0]]
                                 for _, _, dot in part for d0, d1 in BRANCHES])  # fmt: skip
        branches = branches.to(model.device)
        logits = completion_logits(model, prefix, image_features(model, prefix),
                                   group_rows(len(part), len(BRANCHES)), branches,
                                   torch.ones_like(branches))  # fmt: skip
        p = logits.float().softmax(-1)[..., digits.to(model.device)]
        p = (p / p.sum(-1, keepdim=True)).view(len(part), 6, 10, 4, 10)
        w = torch.arange(10, device=p.device, dtype=p.dtype)
        p0 = p[:, 0, 0, 0, :6] / p[:, 0, 0, 0, :6].sum(-1, keepdim=True)  # p(d0)
        p1 = p[:, :, 0, 2, :]  # p(d1 | d0), [n, 6, 10]
        e2 = (p[:, :, :, 3, :] * w).sum(-1)  # E[d2 | d0, d1], [n, 6, 10]
        value = (p0 * (w[:6] + (p1 * (w / 10 + e2 / 100)).sum(-1))).sum(-1)
        for (b, _, _), v in zip(part, value.tolist()):
            scores[b] = min(v, SCORE_RANGE[1])
    return scores


BRANCHES = [(d0, d1) for d0 in range(6) for d1 in range(10)]


def _prompts_with_reasoning(inputs: dict, rows: list[tuple[int, list[int]]], tok) -> dict:
    """Prompt rows `b` of `inputs` each extended by its completion tokens, left-padded again
    to one width (images and grids as the rows')."""
    inputs = {k: v.cpu() for k, v in inputs.items()}
    picked = select_prompts(inputs, [b for b, _ in rows])
    seqs, types = [], []
    for b, extra in rows:
        keep = inputs["attention_mask"][b].bool()
        seqs.append(torch.cat([inputs["input_ids"][b][keep], torch.tensor(extra).long()]))
        if "mm_token_type_ids" in inputs:
            types.append(torch.cat([inputs["mm_token_type_ids"][b][keep],
                                    torch.zeros(len(extra), dtype=torch.long)]))  # fmt: skip
    width = max(len(s) for s in seqs)

    def left(rows: list[torch.Tensor], value: int) -> torch.Tensor:
        return torch.stack([torch.nn.functional.pad(r, (width - len(r), 0), value=value)
                            for r in rows])  # fmt: skip

    out = {"input_ids": left(seqs, tok.pad_token_id),
           "attention_mask": left([torch.ones_like(s) for s in seqs], 0),
           "image_grid_thw": picked["image_grid_thw"],
           "pixel_values": picked["pixel_values"]}  # fmt: skip
    if types:
        out["mm_token_type_ids"] = left(types, 0)
    return out


def read_scores(
    responses: Sequence[str],
    readout: str,
    *,
    model=None,
    processor=None,
    inputs: dict | None = None,
    completion_ids: torch.Tensor | None = None,
    prompt_of: Sequence[int] | None = None,
) -> list[float]:
    """Scores for generated responses by `readout` (see module docstring); NaN where the
    answer is invalid (prompts.read_answer), whatever the read-out. `prompt_of[b]`: the row of
    `inputs` that response b answers (default b)."""
    if readout not in READOUTS:
        raise ValueError(f"unknown read-out {readout!r}; expected one of {READOUTS}")
    greedy = [math.nan if (s := parse_answer(r)) is None else s for r in responses]
    if readout == "greedy":
        return greedy
    expected = expectation_scores(model, processor, inputs, completion_ids, prompt_of)
    return [e if math.isfinite(g) else math.nan for g, e in zip(greedy, expected)]


def check_samples(samples: int, generation: dict) -> None:
    """ValueError unless `samples` answers per image can be drawn with `generation`."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if samples > 1 and not generation.get("do_sample"):
        raise ValueError(f"samples={samples} answers per image need sampling: a generation "
                         "config with do_sample=True (e.g. conf/decoding/sample.yaml)")  # fmt: skip


def summarize(samples: Sequence[float]) -> tuple[float, float]:
    """Mean and population std of the parsed (finite) sample scores; NaN when none parsed."""
    ok = [s for s in samples if math.isfinite(s)]
    if not ok:
        return math.nan, math.nan
    return statistics.fmean(ok), statistics.pstdev(ok)


@dataclass
class ScoredBatch:
    """One batch of `samples` answers per item, item-major (answer k of item i at row
    i * samples + k): the responses, their scores per read-out (NaN when invalid), why each
    answer is invalid (prompts.INVALID; "" when valid), and whether the repetition guard
    stopped its generation."""

    responses: list[str]
    scores: dict[str, list[float]]
    invalid: list[str]
    looped: list[bool]
    samples: int = 1

    def answers_of(self, item: int) -> slice:
        """The rows of item `item`'s answers."""
        return slice(item * self.samples, (item + 1) * self.samples)


def score_items(
    model,
    processor,
    items: Sequence[PromptSpec],
    *,
    instructions: dict[str, str],
    system_prompt: str,
    generation: dict,
    readouts: Sequence[str] = ("greedy",),
    samples: int = 1,
) -> ScoredBatch:
    """Generate and read one batch, `samples` answers per item (more than one needs a
    sampling `generation`). `generation` holds model.generate's settings plus
    `repetition_stop` (the RepetitionStop window in tokens; absent or null: off)."""
    check_samples(samples, generation)
    generation = dict(generation, num_return_sequences=samples)
    window = generation.pop("repetition_stop", None)
    inputs = encode_prompts(processor, items, instructions, system_prompt)
    tok = processor.tokenizer
    guard = window and RepetitionStop(inputs["input_ids"].shape[1], window,
                                      [tok.pad_token_id, tok.eos_token_id])  # fmt: skip
    completion_ids = generate(model, processor, inputs, generation, [guard] if guard else ())
    responses = decode(processor, completion_ids)
    prompt_of = group_rows(len(items), samples).tolist()
    scores = {
        r: read_scores(responses, r, model=model, processor=processor, inputs=inputs,
                       completion_ids=completion_ids, prompt_of=prompt_of)
        for r in readouts
    }  # fmt: skip
    looped = guard.fired.tolist() if guard and guard.fired is not None else [False] * len(responses)
    return ScoredBatch(responses, scores, [read_answer(r).invalid for r in responses], looped,
                       samples)  # fmt: skip
