"""A score is always on the 0-5 scale: one answer rule (prompts.read_answer) for every
consumer. Each bad answer is forced out of the real tiny model (constrained decoding through
model.generate) and read by eval, the scoring API, the TRL reward and best-of-N; the GRPO
rewards read the same texts. The repetition guard stops a looping answer."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from omniquality_r.best_of_n import Candidate, select
from omniquality_r.data.records import Record
from omniquality_r.eval.evaluate import metric_rows, predict
from omniquality_r.eval.metrics import format_table
from omniquality_r.inference import PromptSpec, score_items
from omniquality_r.prompts import (
    NO_ANSWER,
    NOT_A_NUMBER,
    OUT_OF_RANGE,
    TRAILING_TEXT,
    read_answer,
)
from omniquality_r.reward_fn import QualityReward
from omniquality_r.rewards import REWARDS
from omniquality_r.scoring import QualityScorer

INSTRUCTIONS = {"technical": "Rate it.", "aesthetic": "Rate it."}
BAD = {
    "<think>a</think><answer>2666</answer>": OUT_OF_RANGE,
    "<think>a</think><answer>-1</answer>": OUT_OF_RANGE,
    "<think>a</think><answer>5.01</answer>": OUT_OF_RANGE,
    "<think>a</think><answer>3.2abc</answer>": NOT_A_NUMBER,
    "<think>a</think><answer>2666</answer>2.6655555": TRAILING_TEXT,
    "<think>a</think><answer>3.2</answer> and more": TRAILING_TEXT,
    "<think>a 3.2</think>": NO_ANSWER,
}
GOOD = "<think>a</think><answer>3.25</answer>"


@pytest.mark.parametrize(("text", "reason"), BAD.items())
def test_each_bad_answer_is_invalid_with_its_reason(text, reason):
    answer = read_answer(text)
    assert answer.score is None and answer.invalid == reason
    assert answer.describe().startswith(f"{reason}: ")


def test_the_scale_is_inclusive_and_whitespace_is_allowed():
    assert [read_answer(f"<answer>{s}</answer>").score for s in ("0", "5", "5.00", " 2.5 ")] == [
        0.0, 5.0, 5.0, 2.5]  # fmt: skip
    assert read_answer(GOOD + " \n").score == 3.25
    assert "outside [0, 5]" in read_answer("<answer>2666</answer>").describe()


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_grpo_rewards_give_an_invalid_answer_what_they_give_no_answer(name):
    """No accuracy reward for an invalid answer: the value of a completion with no answer."""
    texts = [*BAD, GOOD]
    mos = torch.full((len(texts),), 3.0)
    parts = REWARDS[name](texts, mos, torch.zeros(len(texts), dtype=torch.long),
                          ["synthetic"] * len(texts))  # fmt: skip
    unparsed = REWARDS[name](["no answer"], mos[:1], torch.zeros(1, dtype=torch.long),
                             ["synthetic"])  # fmt: skip
    if name != "fidelity":  # fidelity ranks against the group's other answers
        assert torch.all(parts.accuracy[:-1] == unparsed.accuracy[0])
        assert parts.accuracy[-1] > unparsed.accuracy[0]
    else:
        assert torch.all(parts.accuracy[:-1] == 0)


def forcing(tokenizer, text: str):
    """A prefix_allowed_tokens_fn that makes model.generate write `text`, then eos."""
    target = [*tokenizer(text, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    start: dict[int, int] = {}

    def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
        n = len(input_ids) - start.setdefault(batch_id, len(input_ids))
        return [target[min(n, len(target) - 1)]]

    return allowed


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))


def generation(tokenizer, text: str, **extra) -> dict:
    return {"max_new_tokens": 60, "do_sample": False,
            "prefix_allowed_tokens_fn": forcing(tokenizer, text), **extra}  # fmt: skip


@pytest.mark.parametrize(("text", "reason"), [*BAD.items(), (GOOD, "")])
def test_every_consumer_reads_the_forced_answer_by_the_one_rule(tiny_model, image, tmp_path,
                                                                text, reason):  # fmt: skip
    model, processor = tiny_model
    tok = processor.tokenizer
    valid = not reason
    # the shared prediction path (eval, scoring): no score with any read-out
    out = score_items(model, processor, [PromptSpec(image, "technical")],
                      instructions=INSTRUCTIONS, system_prompt="SYS",
                      generation=generation(tok, text), readouts=("greedy", "expectation"))
    assert out.responses == [text] and out.invalid == [reason]
    assert all(math.isfinite(s[0]) == valid for s in out.scores.values())
    # the scoring API: an error entry naming the reason, never a number
    path = tmp_path / "im.png"
    image.save(path)
    scorer = QualityScorer(model, processor, instructions=INSTRUCTIONS, system_prompt="SYS",
                           generation=generation(tok, text))  # fmt: skip
    [res] = scorer.score([str(path)], task="technical")
    assert res.invalid == [reason] and math.isfinite(res.score) == valid
    assert res.error == ("" if valid else f"invalid answer: {read_answer(text).describe()}")
    # the TRL reward: its documented fallback
    scorer.generation = generation(tok, text)
    reward = QualityReward(scorer, "technical", fallback=0.0)
    assert reward(prompts=["p"], completions=["c"], image=[str(path)]) == [
        3.25 if valid else 0.0]  # fmt: skip
    # best-of-N: an invalid answer never wins
    scorer.generation = generation(tok, text)
    [row] = select(scorer, [Candidate("g", "", str(path))], {"technical": 1.0})
    assert row["winner"] == valid and (row["error"] != "") != valid


def test_eval_counts_invalid_answers_per_reason_in_metrics_and_table(tiny_model, image, tmp_path):
    model, processor = tiny_model
    tok = processor.tokenizer
    path = tmp_path / "im.png"
    image.save(path)
    texts = ["<think>a</think><answer>2666</answer>", GOOD, "<think>" + "5" * 80]
    rows = []
    for i, text in enumerate(texts):
        record = Record(f"r{i}", str(path), "technical", 1.0 + i, 1.0 + i, "synthetic")
        got, _ = predict(model, processor, [record], instructions=INSTRUCTIONS,
                         system_prompt="SYS",
                         generation=generation(tok, text, max_new_tokens=100,
                                               repetition_stop=32))  # fmt: skip
        rows += got
    assert [r["invalid"] for r in rows] == [OUT_OF_RANGE, "", NO_ANSWER]
    assert [r["looped"] for r in rows] == [False, False, True]
    assert len(tok(rows[2]["response"]).input_ids) < 100  # stopped before max_new_tokens
    [task_row, pooled] = metric_rows(rows, "greedy")
    assert pooled["parse_rate"] == pytest.approx(1 / 3)
    assert (pooled["invalid"], pooled["invalid_out_of_range"], pooled["invalid_no_answer"],
            pooled["looped"]) == (2, 1, 1, 1)  # fmt: skip
    table = format_table([task_row, pooled])
    assert "invalid (why)" in table and "2 (no_answer 1, out_of_range 1)" in table


def test_the_repetition_guard_leaves_a_valid_answer_alone(tiny_model, image):
    model, processor = tiny_model
    tok = processor.tokenizer
    runs = [score_items(model, processor, [PromptSpec(image, "technical")],
                        instructions=INSTRUCTIONS, system_prompt="SYS",
                        generation=generation(tok, GOOD, repetition_stop=stop))
            for stop in (None, 8)]  # fmt: skip
    assert runs[0].responses == runs[1].responses == [GOOD]
    assert runs[1].looped == [False] and runs[1].scores["greedy"] == [3.25]
