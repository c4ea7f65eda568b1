"""The fast vision paths compute Hugging Face's Qwen2.5-VL tower function, value and grad."""

import copy

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from omniquality_r.models.fast_vision import (
    BatchedWindowAttention,
    LinearPatchEmbed,
    use_fast_vision,
)


@pytest.mark.parametrize("sizes", [[(8, 8)] * 3, [(8, 8), (4, 6)]])  # equal | mixed windows
def test_fast_tower_equals_hugging_faces(tiny_path, sizes):
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tiny_path)).model.visual.eval()
    fast = use_fast_vision(copy.deepcopy(hf))
    assert isinstance(fast.patch_embed, LinearPatchEmbed)
    assert all(isinstance(b.attn, BatchedWindowAttention) for b in fast.blocks)
    assert set(hf.state_dict()) == set(fast.state_dict())
    grid = torch.tensor([[1, h, w] for h, w in sizes])
    pixels = torch.randn(int(grid.prod(-1).sum()), 1176, generator=torch.Generator().manual_seed(0))
    outs = []
    for tower in (hf, fast):
        out = tower(pixels, grid_thw=grid).pooler_output
        out.square().sum().backward()
        outs.append((out.detach(), {n: p.grad.clone() for n, p in tower.named_parameters()}))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    for name, grad in outs[0][1].items():
        assert torch.allclose(grad, outs[1][1][name], atol=1e-4, rtol=1e-4), name
