import math

import numpy as np
import pytest
import torch
from PIL import Image

from omniquality_r.inference import (
    PromptSpec,
    _answer_digit_positions,
    completion_mask,
    decode,
    encode_prompts,
    generate,
    read_scores,
)

INSTRUCTIONS = {"technical": "Rate it.", "alignment": 'Match "{prompt}"?'}


def _items():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    return [PromptSpec(image, "technical"), PromptSpec(image, "alignment", "a red circle")]


def test_completion_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 6, 9, 0, 0], [5, 9, 7, 9, 0], [1, 2, 3, 4, 5]])
    assert completion_mask(ids, eos_token_id=9).tolist() == [
        [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]  # fmt: skip


def test_answer_digit_positions(tiny_model):
    _, processor = tiny_model
    tok = processor.tokenizer
    ids = tok("<think>ok 2.00</think><answer> 3.47</answer>").input_ids
    pos = _answer_digit_positions(tok, ids)
    assert [tok.decode([ids[p]]) for p in pos] == ["3", "4", "7"]
    assert _answer_digit_positions(tok, tok("<answer>3.4</answer>").input_ids) is None
    assert _answer_digit_positions(tok, tok("<think>3.47</think>").input_ids) is None


def test_generate_and_greedy_readout_are_batched_and_deterministic(tiny_model):
    model, processor = tiny_model
    inputs = encode_prompts(processor, _items(), INSTRUCTIONS, "SYS")
    assert inputs["input_ids"].shape[0] == 2
    gen = {"max_new_tokens": 8, "do_sample": False}
    a = generate(model, processor, inputs, gen)
    b = generate(model, processor, inputs, gen)
    assert torch.equal(a, b) and a.shape == (2, 8)
    scores = read_scores(["<answer>2.5</answer>", "junk"], "greedy")
    assert scores[0] == 2.5 and math.isnan(scores[1])
    assert len(decode(processor, a)) == 2


def test_expectation_readout_weights_digit_probabilities(tiny_model):
    model, processor = tiny_model
    tok = processor.tokenizer
    inputs = encode_prompts(processor, _items(), INSTRUCTIONS, "SYS")
    texts = ["<think>x</think><answer>3.47</answer>", "<think>x</think><answer>oops</answer>"]
    rows = [[*tok(t).input_ids, tok.eos_token_id] for t in texts]
    width = max(map(len, rows))
    completion = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    scores = read_scores(texts, "expectation", model=model, processor=processor, inputs=inputs,
                         completion_ids=completion)  # fmt: skip
    # Peer computation on the first row: plain forward passes (no shared prefix) of the prompt,
    # the reasoning and each branch d0 . d1, then the sum over all 600 digit triples of
    # p(d0) p(d1 | d0) p(d2 | d0, d1) (d0 + d1 / 10 + d2 / 100).
    digits = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    first = rows[0].index(digits[3])
    context, dot = rows[0][:first], rows[0][first + 1]
    n_patches = int(inputs["image_grid_thw"][0].prod())
    prompt = inputs["input_ids"][:1][inputs["attention_mask"][:1].bool()].tolist()

    def next_digit_probs(branch: list[int]) -> torch.Tensor:
        ids = torch.tensor([prompt + context + branch])
        mm = torch.zeros_like(ids)
        mm[0, : len(prompt)] = inputs["mm_token_type_ids"][0][inputs["attention_mask"][0].bool()]
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm,
                           pixel_values=inputs["pixel_values"][:n_patches],
                           image_grid_thw=inputs["image_grid_thw"][:1]).logits[0, -1]  # fmt: skip
        return logits[digits].softmax(-1)

    p0 = next_digit_probs([])[:6]
    p0 = p0 / p0.sum()
    expected = 0.0
    for d0 in range(6):
        p1 = next_digit_probs([digits[d0], dot])
        for d1 in range(10):
            p2 = next_digit_probs([digits[d0], dot, digits[d1]])
            for d2 in range(10):
                expected += float(p0[d0] * p1[d1] * p2[d2]) * (d0 + d1 / 10 + d2 / 100)
    assert scores[0] == pytest.approx(expected, abs=1e-4)
    assert 0.0 <= scores[0] <= 5.0
    assert math.isnan(scores[1])


def test_unknown_readout_is_rejected():
    with pytest.raises(ValueError, match="unknown read-out 'mode'"):
        read_scores(["x"], "mode")
