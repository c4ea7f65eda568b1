"""Rollouts for GRPO with each prompt's image encoded once per group.

The vision tower runs once per prompt (shared_prefix.image_features) and the prompt's text
once per group: generation prefills each prompt once (`prefill_groups`) and
samples its G completions from that key/value cache; the loss and reference
passes (`completion_logits`) run each prompt once and its G completions from
its cache (models/shared_prefix.py). Nothing runs on G copies of a prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..decoding import generation_kwargs
from ..models.loading import base_model
from ..models.shared_prefix import hidden_after_prefix, lm_logits
from .gate import token_entropy

PER_ROW = ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw")


def select_prompts(prompt_inputs: dict, index: Sequence[int]) -> dict:
    """The rows `index` of a prompt batch, pixel patches included (for micro-batches)."""
    idx = torch.as_tensor(list(index), dtype=torch.long)
    out = {k: prompt_inputs[k][idx] for k in PER_ROW if k in prompt_inputs}
    if "pixel_values" in prompt_inputs:
        counts = prompt_inputs["image_grid_thw"].prod(-1).tolist()
        chunks = torch.split(prompt_inputs["pixel_values"], counts)
        out["pixel_values"] = torch.cat([chunks[i] for i in idx.tolist()])
    return out


def group_rows(n_prompts: int, group_size: int) -> Tensor:
    """The prompt of each row of P groups of G: [0]*G + [1]*G + ... (row p*G + g -> p)."""
    return torch.arange(n_prompts).repeat_interleave(group_size)


def expand_rows(prompt_inputs: dict, prompt_of: Tensor) -> dict:
    """Per-row prompt tensors for rows whose prompts are `prompt_of` (e.g. group_rows)."""
    return {k: prompt_inputs[k][prompt_of.to(prompt_inputs[k].device)]
            for k in PER_ROW if k in prompt_inputs}  # fmt: skip


@torch.no_grad()
def generate_groups(
    model, processor, prompt_inputs: dict, features: Sequence[Tensor], group_size: int,
    generation: dict, stopping: Sequence[StoppingCriteria] = (),
) -> Tensor:  # fmt: skip
    """G completions per prompt, [P*G, T] right-padded with pad after eos: the project's one
    generation path (GRPO rollouts; eval, scoring and the hf teacher through
    inference.generate), so another engine (e.g. vLLM on a GPU cluster) plugs in here. Each
    prompt but its last token is prefilled once (prefill_groups), so `generate` starts from
    the group's key/value cache: the same sampling as generating from G copies. `generation`
    is made explicit (decoding.py): a checkpoint's generation_config.json changes nothing;
    `stopping`: extra stopping criteria (inference.RepetitionStop)."""
    tok = processor.tokenizer
    rows = expand_rows(prompt_inputs, group_rows(len(features), group_size))
    cache = prefill_groups(model, prompt_inputs, features, group_size)
    extra = {"stopping_criteria": StoppingCriteriaList(stopping)} if stopping else {}
    out = model.generate(
        input_ids=rows["input_ids"], attention_mask=rows["attention_mask"],
        cache=cache, **generation_kwargs(generation), **extra, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    return out[:, rows["input_ids"].shape[1]:]


def prefill_groups(model, prompt_inputs: dict, features: Sequence[Tensor], group_size: int):
    """The key/value cache of each prompt's first L - 1 tokens (image features included),
    computed once per prompt and repeated for its G rows; the model's rope offsets
    (`rope_deltas`) set for the P*G rows, so decoding continues at the right 3-D positions."""
    vlm = base_model(model).model
    ids, mask = prompt_inputs["input_ids"], prompt_inputs["attention_mask"]
    types = prompt_inputs.get("mm_token_type_ids")
    position_ids, deltas = vlm.get_rope_index(ids, image_grid_thw=prompt_inputs["image_grid_thw"],
                                              attention_mask=mask, mm_token_type_ids=types)
    cache = DynamicCache(config=base_model(model).config.get_text_config())
    extra = {} if types is None else {"mm_token_type_ids": types[:, :-1]}
    vlm(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids[..., :-1],
        mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=tuple(features))},
        image_grid_thw=prompt_inputs["image_grid_thw"], cache=cache, use_cache=True, **extra)
    cache.batch_repeat_interleave(group_size)
    vlm.rope_deltas = deltas.repeat_interleave(group_size, 0)
    return cache


def completion_hidden(
    model, prompt_inputs: dict, features: Sequence[Tensor], prompt_of: Tensor,
    completion_ids: Tensor, completion_mask: Tensor,
) -> Tensor:  # fmt: skip
    """Last-layer hidden states [B, T, D] predicting each completion token of row b, prompt
    `prompt_of[b]` and its image as context; each prompt runs once for all its rows
    (models/shared_prefix.py). The output layer is applied by `completion_logits` (short
    completions) or chunk by chunk by `token_logprobs_and_entropy`."""
    prompt_of = prompt_of.to(completion_ids.device)
    rows = expand_rows(prompt_inputs, prompt_of)
    width = rows["input_ids"].shape[1]
    inputs = {
        "input_ids": torch.cat([rows["input_ids"], completion_ids], dim=1),
        "attention_mask": torch.cat(
            [rows["attention_mask"], completion_mask.to(rows["attention_mask"])], dim=1),
        "image_grid_thw": rows["image_grid_thw"],
    }  # fmt: skip
    if "mm_token_type_ids" in rows:
        inputs["mm_token_type_ids"] = torch.cat(
            [rows["mm_token_type_ids"], torch.zeros_like(completion_ids)], dim=1
        )
    hidden = hidden_after_prefix(model, inputs, prefix_len=width, groups=prompt_of,
                                 features=tuple(features[g] for g in prompt_of.tolist()))
    return hidden[:, :-1]


def completion_logits(model, *args) -> Tensor:
    """Logits [B, T, V] of `completion_hidden(model, *args)` (the full output layer at once)."""
    return lm_logits(model, completion_hidden(model, *args))


def token_logprobs(logits: Tensor, ids: Tensor) -> Tensor:
    """log p(ids[b, t]) = logits[b, t, ids] - logsumexp_v logits[b, t, v], in float32."""
    logits = logits.float()
    return logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


CHUNK_LOGITS = 2**26  # float32 logits per chunk: 256 MB


def token_logprobs_and_entropy(
    model, hidden: Tensor, ids: Tensor, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """(log p(ids) [B, T], entropy H [B, T], rl/gate.token_entropy, without gradient) from
    `hidden` (completion_hidden) with the output layer applied to `chunk_size` positions at
    a time (default: as many as keep a chunk's float32 logits under CHUNK_LOGITS elements),
    under activation checkpointing when gradients flow and there is more than one chunk:
    only [B, chunk, V] logits exist at once, in the forward pass and when the backward
    recomputes them (never the full-vocabulary [B, T, V] tensor: 151k tokens x 256
    positions x 64 rows is 10 GB)."""
    head = base_model(model).lm_head
    B, T = ids.shape
    chunk = chunk_size or max(1, CHUNK_LOGITS // (B * head.out_features))

    def part(h: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        logits = head(h)
        return token_logprobs(logits, i), token_entropy(logits.detach(), chunk_size=h.shape[1])

    grad = torch.is_grad_enabled() and hidden.requires_grad and chunk < T
    outs = [checkpoint(part, h, i, use_reentrant=False) if grad else part(h, i)
            for h, i in zip(hidden.split(chunk, 1), ids.split(chunk, 1))]  # fmt: skip
    return torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 1)
