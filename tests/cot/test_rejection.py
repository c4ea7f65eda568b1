"""Acceptance and selection of teacher trajectories (cot/rejection.py)."""

import pytest

from omniquality_r.cot.rejection import (
    AcceptanceStats,
    Trajectory,
    accept,
    format_table,
    parse_all,
    select,
)


def text(score: float, reasoning: str = "looks fine", plan: str = "check it") -> str:
    return f"<plan>{plan}</plan><think>{reasoning}</think><answer>{score:.2f}</answer>"


def traj(score: float, reasoning: str = "r") -> Trajectory:
    return Trajectory(text(score, reasoning), "check it", reasoning, score)


@pytest.mark.parametrize(
    "bad",
    [
        "<plan>p</plan><think>r</think>",  # no answer
        "<plan>p</plan><think>r</think><answer>good</answer>",  # not a float
        "<plan>p</plan><think>a</think><think>b</think><answer>2.00</answer>",  # two thinks
        "<plan>p</plan>I think <think>r</think><answer>2.00</answer>",  # text outside the tags
        "",
    ],
)
def test_invalid_format_is_not_parsed(bad):
    assert parse_all([bad, text(2.0)]) == [Trajectory(text(2.0), "check it", "looks fine", 2.0)]


def test_plan_is_optional():
    assert parse_all(["<think>r</think><answer>1.50</answer>"])[0].plan == ""


@pytest.mark.parametrize(
    ("score", "accepted"), [(2.5, True), (3.0, True), (2.0, True), (3.01, False), (1.99, False)]
)
def test_accept_within_epsilon_inclusive(score, accepted):
    assert (accept([traj(score)], mos=2.5, epsilon=0.5) != []) == accepted


@pytest.mark.parametrize("order", [1, -1])
def test_closest_rule_breaks_ties_by_longer_reasoning(order):
    short, long = traj(2.25, "short"), traj(2.75, "much longer reasoning")
    far = traj(2.0, "the longest reasoning of all three samples")
    assert select([short, long, far][::order], mos=2.5, rule="closest") == long
    assert select([short, far], mos=2.5, rule="closest") == short


def test_longest_rule_prefers_reasoning_then_closeness():
    short, long_far, long_near = traj(2.5, "ab"), traj(2.0, "abcd"), traj(2.75, "abcd")
    assert select([short, long_far, long_near], mos=2.5, rule="longest") == long_near


def test_first_rule_keeps_the_first_accepted_sample_in_order():
    samples = [traj(1.0, "rejected"), traj(2.9, "first accepted"), traj(2.5, "exact")]
    accepted = accept(samples, mos=2.5, epsilon=0.5)
    assert select(accepted, mos=2.5, rule="first") == samples[1]
    assert select(accepted, mos=2.5, rule="closest") == samples[2]


def test_select_nothing_or_unknown_rule():
    assert select([], mos=1.0) is None
    with pytest.raises(ValueError, match="median"):
        select([traj(1.0)], mos=1.0, rule="median")


def test_stats_count_rates_and_dropped_records():
    stats = AcceptanceStats()
    stats.add("train", "technical", "koniq", 4, [traj(s) for s in (1, 2, 3, 2)], 2, mos=1.0)
    stats.add("train", "technical", "koniq", 4, [traj(s) for s in (4, 4, 4)], 0, mos=2.0)
    stats.add("train", "technical", "spaq", 4, [traj(s) for s in (3, 3, 3, 3)], 1, mos=0.5)
    stats.add("train", "technical", "spaq", 4, [], 0, mos=4.0)  # no valid answer
    rows = {(r["split"], r["task"], r["dataset"]): r for r in stats.rows()}
    koniq, pooled = rows["train", "technical", "koniq"], rows["train", "technical", "all"]
    assert koniq["records"] == 2 and koniq["kept"] == 1 and koniq["dropped"] == 1
    assert koniq["valid_rate"] == 7 / 8 and koniq["acceptance_rate"] == 2 / 8
    assert pooled["records"] == 4 and pooled["accepted"] == 3 and pooled["dropped"] == 2
    # mean proposals 2, 4, 3 against MOS 1, 2, 0.5: ranks (1, 3, 2) vs (2, 3, 1) -> 0.5
    assert pooled["teacher_srcc"] == pytest.approx(0.5) and koniq["teacher_srcc"] is None
    table = format_table(stats.rows())
    assert "acceptance_rate" in table and "25.0%" in table and "0.500" in table
