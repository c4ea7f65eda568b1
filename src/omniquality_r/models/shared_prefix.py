"""Teacher-forced passes that compute a prefix shared by several rows once.

Causal attention makes the hidden states of a prefix independent of what follows it, so rows
that start with the same tokens at the same positions (the system prompt of every SFT row;
the whole prompt of a GRPO group's G completions) can run that prefix once and continue from
its key/value cache, expanded to the rows: the same function as one pass over each row, at
a fraction of the cost (gradients flow through the shared keys and values to the weights).

`hidden_after_prefix` does it for Qwen2.5-VL: 3-D rope positions from the model's own
`get_rope_index` over the full rows, the prefix through the model with a DynamicCache for
one representative row per group, the cache gathered to every row (`reorder_cache`), then
the rest of each row. A row holds one image, all of whose tokens lie in the prefix or all in
the rest.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .loading import base_model


def image_features(model, inputs: dict) -> tuple[Tensor, ...]:
    """Merged vision features per image of `inputs` (one pass of the vision tower)."""
    out = base_model(model).model.get_image_features(
        inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True
    )
    return tuple(out.pooler_output)


def common_prefix_length(model, input_ids: Tensor, attention_mask: Tensor) -> int:
    """Leading positions where every row holds the same attended token, up to the first
    image/video placeholder, and at most width - 1 (the rest is never empty)."""
    config = base_model(model).config
    vision = torch.isin(input_ids[0], torch.tensor([config.image_token_id, config.video_token_id],
                                                   device=input_ids.device))  # fmt: skip
    same = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0) & ~vision
    return min(int(same.long().cumprod(0).sum()), input_ids.shape[1] - 1)


def hidden_after_prefix(
    model,
    inputs: dict,
    *,
    prefix_len: int,
    groups: Tensor,
    features: tuple[Tensor, ...] | None = None,
) -> Tensor:
    """Last-layer hidden states at positions prefix_len - 1 .. T - 1 of each row (B, T -
    prefix_len + 1, D): those that predict tokens prefix_len .. T (the last predicts past the
    row). `inputs`: input_ids, attention_mask (B, T), image_grid_thw (one image per row),
    mm_token_type_ids and pixel_values as the processor writes them; `groups` (B,): rows of
    one group share their first prefix_len tokens, computed once on the group's first row;
    `features`: the merged vision features per row (image_features), else the tower runs on
    the pixel_values."""
    base = base_model(model)
    vlm = base.model
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if not 1 <= prefix_len < ids.shape[1]:
        raise ValueError(f"prefix_len {prefix_len} must be in [1, {ids.shape[1] - 1}] for rows "
                         f"of {ids.shape[1]} tokens")  # fmt: skip
    grid, types = inputs["image_grid_thw"], inputs.get("mm_token_type_ids")
    position_ids, _ = vlm.get_rope_index(ids, image_grid_thw=grid, attention_mask=mask,
                                         mm_token_type_ids=types)  # fmt: skip
    group_of = torch.unique(groups, sorted=False, return_inverse=True)[1]  # row -> 0..n-1
    first = torch.zeros(int(group_of.max()) + 1, dtype=torch.long, device=ids.device)
    first.scatter_reduce_(0, group_of, torch.arange(len(ids), device=ids.device), "amin",
                          include_self=False)  # group -> its first row  # fmt: skip
    image_in_prefix = bool((ids[:, :prefix_len] == base.config.image_token_id).any())
    features = image_features(model, inputs) if features is None else features

    def part(rows: Tensor, cols: slice, cache: DynamicCache, with_image: bool):
        extra = {}
        if with_image:
            extra["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(
                pooler_output=tuple(features[r] for r in rows.tolist()))}  # fmt: skip
            extra["image_grid_thw"] = grid[rows]
        if types is not None:
            extra["mm_token_type_ids"] = types[rows, cols]
        width = cols.stop if cols.stop is not None else ids.shape[1]
        return vlm(input_ids=ids[rows, cols], attention_mask=mask[rows, :width],
                   position_ids=position_ids[:, rows, cols], cache=cache, use_cache=True,
                   **extra).last_hidden_state  # fmt: skip

    cache = DynamicCache(config=base.config.get_text_config())
    prefix = part(first, slice(0, prefix_len), cache, image_in_prefix)
    cache.reorder_cache(group_of)  # every row continues from its group's prefix
    rows = torch.arange(len(ids), device=ids.device)
    rest = part(rows, slice(prefix_len, None), cache, not image_in_prefix)
    return torch.cat([prefix[group_of, -1:], rest], dim=1)


def lm_logits(model, hidden: Tensor) -> Tensor:
    """The output layer (lm_head) on hidden states."""
    return base_model(model).lm_head(hidden)
