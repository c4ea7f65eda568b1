"""Turn chain-of-thought rows into SFT batches: (processor, rows) -> tensors.

A row carries the Record fields plus `plan`, `reasoning` and `score` (cot.jsonl of
`stage=cot`). Each example is

    prompt    chat template of build_messages (system prompt; image + task instruction)
              with the generation prompt `<|im_start|>assistant\\n`, image tokens expanded
    target    compose_response(reasoning, score, plan if keep_plan else "") + <|im_end|>

tokenized separately and concatenated, so the target's tokens are exactly the ones the
model generates after the prompt at inference (inference.encode_prompts). Labels are -100
on the prompt and on padding: the loss is on the assistant tokens only. Batches are
right-padded to their longest example (no fixed length); an example longer than
`max_length` loses the end of its target (counted as truncated), one whose prompt alone
does not fit, or whose image cannot be read, is left out (listed in `skipped`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..prompts import build_messages, compose_response
from .records import DataError, load_image

IGNORE_INDEX = -100
END_OF_TURN = "<|im_end|>"


def sft_target(row: Mapping, keep_plan: bool) -> str:
    """The assistant's response for a CoT row (its plan only when `keep_plan`)."""
    plan = (row.get("plan") or "") if keep_plan else ""
    return compose_response(row["reasoning"], float(row["score"]), plan)


def _encode(processor, row: Mapping, end_id: int, *, instructions: dict[str, str],
            system_prompt: str, keep_plan: bool, max_length: int):  # fmt: skip
    """(processor output, prompt ids, target ids) of a row, or why it is left out."""
    try:
        image = load_image(row["image"])
    except DataError as e:
        return f"{row['id']}: {e}"
    messages = build_messages(row["task"], instructions, system_prompt, row["prompt"])
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[prompt], images=[image], return_tensors=None)
    prompt_ids = enc["input_ids"][0]
    if len(prompt_ids) >= max_length:
        return f"{row['id']}: prompt of {len(prompt_ids)} tokens >= max_length {max_length}"
    tok = processor.tokenizer
    return enc, prompt_ids, [*tok(sft_target(row, keep_plan), add_special_tokens=False).input_ids,
                             end_id]  # fmt: skip


def collate_sft(
    processor,
    rows: Sequence[Mapping],
    *,
    instructions: dict[str, str],
    system_prompt: str,
    keep_plan: bool = False,
    max_length: int = 2048,
    cache: dict | None = None,
) -> dict:
    """Model inputs with `labels` (see module docstring), plus `ids` (of the rows in the
    batch), `skipped` (list of "id: reason") and `truncated` (count). No `input_ids` when
    every row was skipped.
    `cache` (a dict kept across calls): each row's image is read, processed and tokenized
    once, not once per epoch; rows whose image could not be read are retried."""
    tok = processor.tokenizer
    end_id = tok.convert_tokens_to_ids(END_OF_TURN)
    examples, skipped, truncated, ids = [], [], 0, []
    for row in rows:
        key = (row["id"], row["task"], row["prompt"], row["reasoning"], row["score"])
        encoded = None if cache is None else cache.get(key)
        if encoded is None:
            encoded = _encode(processor, row, end_id, instructions=instructions,
                              system_prompt=system_prompt, keep_plan=keep_plan,
                              max_length=max_length)  # fmt: skip
            if cache is not None and not isinstance(encoded, str):  # skipped rows: retried
                cache[key] = encoded
        if isinstance(encoded, str):
            skipped.append(encoded)
            continue
        enc, prompt_ids, target = encoded
        truncated += len(target) > max_length - len(prompt_ids)
        examples.append((enc, prompt_ids, target[: max_length - len(prompt_ids)]))
        ids.append(row["id"])
    if not examples:
        return {"skipped": skipped, "truncated": truncated}

    width = max(len(p) + len(t) for _, p, t in examples)

    def padded(seqs: list[list[int]], value: int) -> torch.Tensor:
        return torch.tensor([s + [value] * (width - len(s)) for s in seqs])

    def stacked(key: str) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([e[key] for e, _, _ in examples]))

    batch = {
        "input_ids": padded([p + t for _, p, t in examples], tok.pad_token_id),
        "attention_mask": padded([[1] * (len(p) + len(t)) for _, p, t in examples], 0),
        "labels": padded([[IGNORE_INDEX] * len(p) + t for _, p, t in examples], IGNORE_INDEX),
        "pixel_values": stacked("pixel_values"),
        "image_grid_thw": stacked("image_grid_thw"),
    }
    if "mm_token_type_ids" in examples[0][0]:
        batch["mm_token_type_ids"] = padded(
            [e["mm_token_type_ids"][0] + [0] * len(t) for e, _, t in examples], 0
        )
    return {**batch, "ids": ids, "skipped": skipped, "truncated": truncated}
