"""Chat prompts and the one answer parser every stage uses.

The system prompt (R1 style) and the task instructions live in `conf/`
(`system_prompt` in config.yaml, `instruction` in conf/task/*.yaml); this
module only assembles them into chat messages and reads answers back.
"""

from __future__ import annotations

import re

# One <think>...</think> followed by one <answer>...</answer>, nothing else around them.
_FORMAT_RE = re.compile(r"^\s*<think>(?:(?!</?think>|</?answer>).)*</think>\s*"
                        r"<answer>(?:(?!</?think>|</?answer>).)*</answer>\s*$", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FLOAT_RE = re.compile(r"^\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*$")


def format_ok(text: str) -> bool:
    """True when `text` is exactly one <think>...</think> then one <answer>...</answer>."""
    return _FORMAT_RE.match(text) is not None


def parse_answer(text: str) -> float | None:
    """The float inside the last <answer></answer>, or None when absent or not a bare float."""
    answers = _ANSWER_RE.findall(text)
    if not answers:
        return None
    m = _FLOAT_RE.match(answers[-1])
    return float(m.group(1)) if m else None


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
