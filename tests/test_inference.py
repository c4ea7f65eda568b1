import math

import numpy as np
import pytest
import torch
from PIL import Image

from omniquality_r.eval.evaluate import item_answers
from omniquality_r.inference import (
    PromptSpec,
    ScoredBatch,
    _answer_digit_positions,
    check_samples,
    completion_mask,
    decode,
    encode_prompts,
    generate,
    read_scores,
    score_items,
)

INSTRUCTIONS = {"technical": "Rate it.", "alignment": 'Match "{prompt}"?'}


def _items():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    return [PromptSpec(image, "technical"), PromptSpec(image, "alignment", "a red circle")]


def _completion_rows(tok, texts: list[str]) -> list[list[int]]:
    """Each text's token ids and eos, right-padded with pad to one width (generate's shape)."""
    rows = [[*tok(t).input_ids, tok.eos_token_id] for t in texts]
    width = max(map(len, rows))
    return [r + [tok.pad_token_id] * (width - len(r)) for r in rows]


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
    rows = _completion_rows(tok, texts)
    completion = torch.tensor(rows)
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


def test_expectation_of_several_answers_per_prompt_reads_each_answers_prompt(tiny_model):
    """Answers item-major (prompt_of [0, 0, 1, 1]) get the expectation each one gets as the
    only answer to its own prompt."""
    model, processor = tiny_model
    tok = processor.tokenizer
    inputs = encode_prompts(processor, _items(), INSTRUCTIONS, "SYS")
    texts = ["<think>x</think><answer>3.47</answer>", "<think>yy</think><answer>1.20</answer>"]
    padded = _completion_rows(tok, texts)

    def expectation(answers: list[int], prompt_of=None) -> list[float]:
        return read_scores([texts[a] for a in answers], "expectation", model=model,
                           processor=processor, inputs=inputs,
                           completion_ids=torch.tensor([padded[a] for a in answers]),
                           prompt_of=prompt_of)  # fmt: skip

    grouped = expectation([0, 1, 0, 1], prompt_of=[0, 0, 1, 1])
    assert grouped[0::2] == pytest.approx(expectation([0, 0]), abs=1e-5)  # one per prompt
    assert grouped[1::2] == pytest.approx(expectation([1, 1]), abs=1e-5)
    assert grouped[0] != pytest.approx(grouped[2], abs=1e-4)  # the prompt matters


def test_score_items_draws_samples_per_item_item_major(tiny_model):
    model, processor = tiny_model
    sampling = {"max_new_tokens": 12, "do_sample": True, "temperature": 1.0}
    torch.manual_seed(0)
    out = score_items(model, processor, _items(), instructions=INSTRUCTIONS, system_prompt="SYS",
                      generation=sampling, samples=3)  # fmt: skip
    assert out.samples == 3 and len(out.responses) == len(out.scores["greedy"]) == 6
    assert len(out.invalid) == len(out.looped) == 6
    assert out.answers_of(1) == slice(3, 6)
    assert len(set(out.responses)) > 1  # sampled, not one answer copied
    with pytest.raises(ValueError, match="samples=2 answers per image need sampling"):
        score_items(model, processor, _items(), instructions=INSTRUCTIONS, system_prompt="SYS",
                    generation={"max_new_tokens": 4, "do_sample": False}, samples=2)  # fmt: skip
    with pytest.raises(ValueError, match="samples must be >= 1"):
        check_samples(0, sampling)


def test_item_answers_sum_up_an_items_answers():
    """Hand values: the mean of the valid answers per read-out; valid if any answer is."""
    out = ScoredBatch(
        responses=["a", "b", "c", "d", "e", "f"],
        scores={"greedy": [2.0, math.nan, 3.0, math.nan, math.nan, math.nan],
                "expectation": [2.5, math.nan, 3.5, math.nan, math.nan, math.nan]},
        invalid=["", "no_answer", "", "no_answer", "out_of_range", "no_answer"],
        looped=[False, True, False, False, False, False],
        samples=3,
    )  # fmt: skip
    first = item_answers(out, 0, ["greedy", "expectation"])
    assert first == {"response": "a", "invalid": "", "looped": True,
                     "score_greedy": 2.5, "score_expectation": 3.0}  # fmt: skip
    second = item_answers(out, 1, ["greedy"])
    assert second["invalid"] == "no_answer" and not second["looped"]
    assert math.isnan(second["score_greedy"]) and second["response"] == "d"
