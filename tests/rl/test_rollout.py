"""Encoding each image once per group gives exactly what G copies would."""

import numpy as np
import pytest
import torch
from PIL import Image

from omniquality_r.inference import PromptSpec, completion_mask, encode_prompts
from omniquality_r.models.shared_prefix import image_features
from omniquality_r.rl.rollout import (
    completion_logits,
    expand_rows,
    generate_groups,
    group_rows,
    select_prompts,
    token_logprobs,
)

G = 3


@pytest.fixture(scope="module")
def batch(tiny_model):
    _, processor = tiny_model
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
              for _ in range(2)]  # fmt: skip
    specs = [PromptSpec(images[0], "technical"), PromptSpec(images[1], "alignment", "a cat")]
    return encode_prompts(processor, specs, {"technical": "Rate.", "alignment": '"{prompt}"?'},
                          "SYS")  # fmt: skip


def test_select_prompts_slices_pixels_per_image(tiny_model, batch):
    model, _ = tiny_model
    with torch.no_grad():
        whole = image_features(model, batch)
        second = image_features(model, select_prompts(batch, [1]))
    assert torch.allclose(whole[1], second[0], atol=1e-5)


def test_generation_with_shared_features_equals_num_return_sequences(tiny_model, batch):
    model, processor = tiny_model
    gen = {"do_sample": True, "temperature": 1.0, "top_k": 0, "max_new_tokens": 12}
    with torch.no_grad():
        feats = image_features(model, batch)
    torch.manual_seed(0)
    ours = generate_groups(model, processor, batch, feats, G, gen)
    torch.manual_seed(0)
    ref = model.generate(**batch, num_return_sequences=G, **gen,
                         pad_token_id=processor.tokenizer.pad_token_id)  # fmt: skip
    assert torch.equal(ours, ref[:, batch["input_ids"].shape[1]:])


def test_loss_pass_logprobs_equal_a_plain_forward_on_g_copies(tiny_model, batch):
    model, processor = tiny_model
    tok = processor.tokenizer
    ids = torch.tensor([tok("<think>a</think><answer>2.00</answer>").input_ids[:8]] * 2 * G)
    ids[1, 5:] = tok.eos_token_id
    mask = completion_mask(ids, tok.eos_token_id)
    with torch.no_grad():
        ours = token_logprobs(completion_logits(model, batch, image_features(model, batch),
                                                group_rows(2, G), ids, mask), ids)  # fmt: skip
        rows = expand_rows(batch, group_rows(2, G))
        full = model(
            input_ids=torch.cat([rows["input_ids"], ids], 1),
            attention_mask=torch.cat([rows["attention_mask"], mask], 1),
            mm_token_type_ids=torch.cat([rows["mm_token_type_ids"], torch.zeros_like(ids)], 1),
            pixel_values=_repeat_pixels(batch, G),
            image_grid_thw=rows["image_grid_thw"],
        ).logits
        p = rows["input_ids"].shape[1]
        ref = torch.log_softmax(full[:, p - 1:-1].float(), -1).gather(-1, ids[..., None])[..., 0]
    valid = mask.bool()
    assert torch.allclose(ours[valid], ref[valid], atol=1e-4)


def _repeat_pixels(batch, g):
    counts = batch["image_grid_thw"].prod(-1).tolist()
    chunks = torch.split(batch["pixel_values"], counts)
    return torch.cat([c for c in chunks for _ in range(g)])
