"""SFT batches: loss only on the assistant tokens (checked on token ids), dynamic right
padding, truncation at max_length, unreadable images skipped."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from omniquality_r.data.collate import IGNORE_INDEX, collate_sft, sft_target
from omniquality_r.data.records import load_image
from omniquality_r.data.synthetic import generate_synthetic
from omniquality_r.inference import PromptSpec, encode_prompts
from omniquality_r.prompts import compose_response

INSTRUCTIONS = {"technical": "Rate the quality.", "aesthetic": "Rate the beauty.",
                "alignment": 'Does it show "{prompt}"?'}  # fmt: skip
SYSTEM = "Think, then answer."


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    """CoT-like rows: synthetic records, one reasoning sentence of varying length, score = MOS."""
    records = generate_synthetic(tmp_path_factory.mktemp("syn"), n_per_task=2)
    return [{**asdict(r), "split": "train", "plan": f"Plan for {r.task}.",
             "reasoning": "The image looks fine. " * (1 + 3 * i), "score": round(r.mos, 2),
             "teacher": "test"} for i, r in enumerate(records)]  # fmt: skip


def collate(processor, rows, **kwargs):
    kwargs = {"instructions": INSTRUCTIONS, "system_prompt": SYSTEM, **kwargs}
    return collate_sft(processor, rows, **kwargs)


def test_labels_mask_everything_but_the_response_and_its_end_of_turn(tiny_model, rows):
    _, processor = tiny_model
    tok = processor.tokenizer
    batch = collate(processor, rows)
    assert batch["skipped"] == [] and batch["truncated"] == 0
    for i, row in enumerate(rows):
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        kept = labels != IGNORE_INDEX
        assert torch.equal(labels[kept], ids[kept])
        expected = compose_response(row["reasoning"], row["score"]) + "<|im_end|>"
        assert tok.decode(ids[kept]) == expected
        # the prompt is exactly what inference encodes, so the targets follow it as at test time
        prompt = encode_prompts(processor, [PromptSpec(load_image(row["image"]), row["task"],
                                                       row["prompt"])], INSTRUCTIONS, SYSTEM)
        n_prompt = prompt["input_ids"].shape[1]
        assert torch.equal(ids[:n_prompt], prompt["input_ids"][0])
        assert not kept[:n_prompt].any() and kept[n_prompt : n_prompt + int(kept.sum())].all()


def test_plan_is_kept_only_when_asked(tiny_model, rows):
    _, processor = tiny_model
    assert "Plan for" not in sft_target(rows[0], keep_plan=False)
    assert sft_target(rows[0], keep_plan=True).startswith("<think>Plan for technical.\n")
    batch = collate(processor, rows[:1], keep_plan=True)
    kept = batch["labels"][0] != IGNORE_INDEX
    assert processor.tokenizer.decode(batch["input_ids"][0][kept]).startswith("<think>Plan for")


def test_padding_is_dynamic_and_on_the_right(tiny_model, rows):
    _, processor = tiny_model
    pad = processor.tokenizer.pad_token_id
    batch = collate(processor, rows)
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == int(lengths.max()) < 2048
    short = int(lengths.argmin())
    n = int(lengths[short])
    assert batch["attention_mask"][short, :n].all() and not batch["attention_mask"][short, n:].any()
    assert (batch["input_ids"][short, n:] == pad).all()
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all()
    assert (batch["mm_token_type_ids"][short, n:] == 0).all()
    assert collate(processor, rows[:1])["input_ids"].shape[1] < batch["input_ids"].shape[1]
    assert batch["image_grid_thw"].shape == (len(rows), 3)


def test_long_targets_are_truncated_and_too_long_prompts_skipped(tiny_model, rows):
    _, processor = tiny_model
    full = collate(processor, rows[:1])
    n_prompt = int((full["labels"][0] == IGNORE_INDEX).sum())
    cut = collate(processor, rows[:1], max_length=n_prompt + 5)
    assert cut["truncated"] == 1 and cut["input_ids"].shape[1] == n_prompt + 5
    assert torch.equal(cut["input_ids"][0], full["input_ids"][0, : n_prompt + 5])
    assert int((cut["labels"][0] != IGNORE_INDEX).sum()) == 5
    too_short = collate(processor, rows[:2], max_length=n_prompt)
    assert "input_ids" not in too_short and len(too_short["skipped"]) == 2
    assert "max_length" in too_short["skipped"][0]


def test_unreadable_images_are_skipped_and_listed(tiny_model, rows, tmp_path):
    _, processor = tiny_model
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    bad = [{**rows[0], "id": "bad/1", "image": str(corrupt)},
           {**rows[0], "id": "bad/2", "image": str(tmp_path / "missing.png")}]  # fmt: skip
    batch = collate(processor, [bad[0], rows[1], bad[1]])
    assert batch["input_ids"].shape[0] == 1 and batch["image_grid_thw"].shape[0] == 1
    assert [s.split(":")[0] for s in batch["skipped"]] == ["bad/1", "bad/2"]
    assert "input_ids" not in collate(processor, bad)


def test_the_cache_encodes_each_row_once_and_gives_the_same_batch(tiny_model, rows, monkeypatch):
    from omniquality_r.data import collate

    calls = []
    encode = collate._encode
    monkeypatch.setattr(collate, "_encode", lambda *a, **k: calls.append(1) or encode(*a, **k))
    cache: dict = {}
    first = collate_sft(tiny_model[1], rows, instructions=INSTRUCTIONS, system_prompt="S",
                        cache=cache)  # fmt: skip
    again = collate_sft(tiny_model[1], rows, instructions=INSTRUCTIONS, system_prompt="S",
                        cache=cache)  # fmt: skip
    assert len(calls) == len(rows)
    assert all(torch.equal(first[k], again[k]) for k in first if isinstance(first[k], torch.Tensor))
