import pytest

from omniquality_r.prompts import (
    build_messages,
    compose_response,
    format_ok,
    instruction_for,
    parse_answer,
    parse_trajectory,
)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("<think>sharp, no noise</think><answer>4.25</answer>", True),
        ("  <think>a\nb</think>\n<answer> 3.00 </answer>\n", True),
        ("<think>x</think>", False),
        ("<answer>3.00</answer>", False),
        ("<answer>3.00</answer><think>x</think>", False),
        ("<think>x</think><answer>1</answer><answer>2</answer>", False),
        ("<think>x<think>y</think><answer>2</answer>", False),
        ("preamble <think>x</think><answer>2</answer>", False),
    ],
)
def test_format_ok(text, ok):
    assert format_ok(text) is ok


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("<think>x</think><answer>4.25</answer>", 4.25),
        ("<answer> 3 </answer>", 3.0),
        ("<answer>.5</answer>", 0.5),
        ("<answer>1.00</answer> and <answer>2.50</answer>", None),  # text after </answer>
        ("<answer>5</answer>\n", 5.0),
        ("<answer>0.00</answer>", 0.0),
        ("<answer>5.01</answer>", None),  # outside [0, 5]
        ("<answer>about 3</answer>", None),
        ("<answer></answer>", None),
        ("no tags 3.5", None),
        ("<answer>3.5", None),
    ],
)
def test_parse_answer(text, score):
    assert parse_answer(text) == score


def test_instruction_substitutes_the_alignment_prompt():
    inst = {"alignment": 'Does it match "{prompt}"?', "technical": "Rate it."}
    assert instruction_for("alignment", inst, "a red circle") == 'Does it match "a red circle"?'
    with pytest.raises(KeyError, match="aesthetic"):
        instruction_for("aesthetic", inst)
    msgs = build_messages("technical", inst, "SYS")
    assert msgs[0]["content"][0]["text"] == "SYS"
    assert [c["type"] for c in msgs[1]["content"]] == ["image", "text"]


def test_trajectory_round_trip_and_plan_switch():
    text = "<plan>check blur</plan><think>edges are soft</think><answer>2.40</answer>"
    assert parse_trajectory(text) == ("check blur", "edges are soft", 2.4)
    assert parse_trajectory("<think>r</think><answer>1.00</answer>") == ("", "r", 1.0)
    assert parse_trajectory("<plan>p</plan><think>r</think><answer>high</answer>") is None
    assert parse_trajectory("<plan>p</plan><answer>1</answer>") is None
    kept = compose_response("edges are soft", 2.4, plan="check blur")
    assert kept == "<think>check blur\nedges are soft</think><answer>2.40</answer>"
    dropped = compose_response("edges are soft", 2.4)
    assert format_ok(kept) and format_ok(dropped) and parse_answer(dropped) == 2.4
