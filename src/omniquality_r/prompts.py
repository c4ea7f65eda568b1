"""Chat prompts and the one answer parser every stage uses.

The system prompt (R1 style) and the task instructions live in `conf/`
(`system_prompt` in config.yaml, `instruction` in conf/task/*.yaml); this
module only assembles them into chat messages and reads answers back.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# One <think>...</think> followed by one <answer>...</answer>, nothing else around them.
_FORMAT_RE = re.compile(r"^\s*<think>(?:(?!</?think>|</?answer>).)*</think>\s*"
                        r"<answer>(?:(?!</?think>|</?answer>).)*</answer>\s*$", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FLOAT_RE = re.compile(r"^\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*$")


def format_ok(text: str) -> bool:
    """True when `text` is exactly one <think>...</think> then one <answer>...</answer>."""
    return _FORMAT_RE.match(text) is not None


SCORE_RANGE = (0.0, 5.0)  # every task's answers; dataset MOS are mapped onto it (data/native.py)
# Why an answer is not a score (Answer.invalid), in the order read_answer checks them.
NO_ANSWER = "no_answer"  # no <answer>...</answer>
TRAILING_TEXT = "trailing_text"  # anything but whitespace after the first </answer>
NOT_A_NUMBER = "not_a_number"  # the answer is not one bare decimal number
OUT_OF_RANGE = "out_of_range"  # a number outside SCORE_RANGE
INVALID = (NO_ANSWER, TRAILING_TEXT, NOT_A_NUMBER, OUT_OF_RANGE)


@dataclass(frozen=True)
class Answer:
    """A response's answer: its score, or None and the reason (one of INVALID)."""

    score: float | None
    invalid: str = ""
    text: str = ""  # what stood between the tags ("" without them)

    def describe(self) -> str:
        """The reason in words, for error entries: `out_of_range: '2666' is outside [0, 5]`."""
        lo, hi = SCORE_RANGE
        detail = {NO_ANSWER: "no <answer>...</answer> in the response",
                  TRAILING_TEXT: f"text after </answer> (answer {self.text!r})",
                  NOT_A_NUMBER: f"{self.text!r} is not a bare number",
                  OUT_OF_RANGE: f"{self.text.strip()!r} is outside [{lo:g}, {hi:g}]"}  # fmt: skip
        return f"{self.invalid}: {detail[self.invalid]}" if self.invalid else ""


def read_answer(text: str) -> Answer:
    """The one answer rule of every consumer (eval, GRPO rewards, scoring, the TRL reward,
    best-of-N, the CoT teacher): the first <answer>s</answer> with nothing but whitespace
    after it, s one bare decimal number in SCORE_RANGE (inclusive). Anything else is invalid,
    with the first reason that applies (INVALID)."""
    m = _ANSWER_RE.search(text)
    if m is None:
        return Answer(None, NO_ANSWER)
    inner = m.group(1)
    if text[m.end():].strip():
        return Answer(None, TRAILING_TEXT, inner)
    number = _FLOAT_RE.match(inner)
    if number is None:
        return Answer(None, NOT_A_NUMBER, inner)
    value = float(number.group(1))
    if not SCORE_RANGE[0] <= value <= SCORE_RANGE[1]:
        return Answer(None, OUT_OF_RANGE, inner)
    return Answer(value, "", inner)


def answer_counts(invalid: Sequence[str], looped: Sequence[bool]) -> dict[str, int]:
    """How many answers were invalid, per reason (prompts.INVALID: `invalid_<reason>`), and how
    many generations the repetition guard stopped (`looped`)."""
    counts = Counter(r for r in invalid if r)
    return {"invalid": sum(counts.values()),
            **{f"invalid_{r}": counts[r] for r in INVALID},
            "looped": int(sum(bool(x) for x in looped))}  # fmt: skip


def parse_answer(text: str) -> float | None:
    """read_answer's score: a float in SCORE_RANGE, or None when the answer is invalid."""
    return read_answer(text).score


def instruction_for(task: str, instructions: dict[str, str], prompt: str = "") -> str:
    """The task instruction, with the alignment prompt substituted for `{prompt}`."""
    if task not in instructions:
        raise KeyError(f"no instruction for task {task!r}; configured: {sorted(instructions)}")
    return instructions[task].replace("{prompt}", prompt)


def build_messages(
    task: str, instructions: dict[str, str], system_prompt: str, prompt: str = ""
) -> list[dict]:
    """Chat messages for one record: system prompt, then the image and the task instruction."""
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": instruction_for(task, instructions, prompt)},
            ],
        },
    ]


_TAG_RE = {tag: re.compile(rf"<{tag}>(.*?)</{tag}>", re.DOTALL) for tag in ("plan", "think")}


def parse_trajectory(text: str) -> tuple[str, str, float] | None:
    """(plan, reasoning, score) of a teacher trajectory `[<plan>p</plan>]<think>r</think>
    <answer>s</answer>`; None when the think/answer format is invalid or the score does not parse.
    The plan may be absent ("")."""
    plan = _TAG_RE["plan"].search(text)
    rest = text[plan.end():] if plan else text
    if not format_ok(rest) or (score := parse_answer(rest)) is None:
        return None
    return (plan.group(1).strip() if plan else "", _TAG_RE["think"].search(rest).group(1).strip(),
            score)  # fmt: skip


def compose_response(reasoning: str, score: float, plan: str = "") -> str:
    """The assistant's target text: `<think>[plan\\n]reasoning</think><answer>s.ss</answer>`."""
    think = f"{plan}\n{reasoning}" if plan else reasoning
    return f"<think>{think}</think><answer>{score:.2f}</answer>"
