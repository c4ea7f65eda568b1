"""benchmarks/alignment_copy.py: quoted groups and verdicts scored against hand-made rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import alignment_copy as bench  # benchmarks/ is a folder of scripts

PROMPT = "two red circles on the left and one blue square at the top"
SAY = '"{}": colour {}, shape {}, count {}, position {}.'
YES, NO = "satisfied", "not satisfied"


def test_copy_scores_count_groups_quoted_verbatim_at_their_place():
    right = SAY.format("two red circles on the left", YES, YES, YES, YES) + " " + SAY.format(
        "one blue square at the top", NO, YES, YES, YES)
    swapped = SAY.format("one blue square at the top", YES, YES, YES, YES) + " " + SAY.format(
        "two red circles on the left", YES, YES, YES, YES)
    rows = [{"prompt": PROMPT, "response": right}, {"prompt": PROMPT, "response": swapped}]
    assert bench.copy_scores(rows) == (0.5, 0.5)  # 2 of 4 groups in place; 1 of 2 rows exact


def test_verdict_scores_read_the_kth_verdicts_as_the_prompts_kth_group():
    truth = {"r": {"objects": [
        {"satisfied": {"colour": True, "shape": True, "count": False, "position": True}},
        {"satisfied": {"colour": False, "shape": False, "count": False, "position": False}},
    ]}}  # fmt: skip
    response = (SAY.format("anything", YES, YES, YES, YES) + " "
                + SAY.format("else", NO, NO, NO, YES))  # fmt: skip
    right, constant = bench.verdict_scores([{"id": "r", "response": response}], truth)
    assert right == pytest.approx(6 / 8)  # count of group 1 and position of group 2 wrong
    # a constant verdict per element: colour, shape, position 1 of 2, count 2 of 2 -> 5 / 8
    assert constant == pytest.approx(5 / 8)
