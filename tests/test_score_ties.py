"""benchmarks/score_ties.py: what ties among the greedy scores cost, on hand-computed cases."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import score_ties as bench  # benchmarks/ is a folder of scripts


def test_two_tied_pairs_lose_what_breaking_the_ties_by_mos_restores():
    s = bench.tie_summary([2.0, 1.0, 2.0, 1.0, 2.0], [3.0, 1.0, 5.0, 2.0, 4.0])
    # ranks of the scores 4, 1.5, 4, 1.5, 4 against 3, 1, 5, 2, 4: 7.5 / sqrt(7.5 * 10)
    assert s["srcc"] == pytest.approx(np.sqrt(3) / 2)
    assert s["srcc ties broken"] == pytest.approx(1.0)
    assert (s["distinct"], s["block share"], s["block score"]) == (2, 0.6, 2.0)
    assert (s["block mos mean"], s["block mos sd"]) == (4.0, pytest.approx(np.sqrt(2 / 3)))


def test_breaking_ties_never_reorders_records_the_scores_separate():
    # the model ranks the second record above the first although its MOS is lower:
    # breaking ties cannot mend that, so the bound stays below 1 (peer: scipy's spearmanr)
    s = bench.tie_summary([1.0, 2.0, 3.0, 3.0], [2.0, 1.0, 3.0, 4.0])
    assert s["srcc"] == pytest.approx(3.5 / np.sqrt(4.5 * 5))  # ranks 1, 2, 3.5, 3.5
    assert s["srcc"] == pytest.approx(spearmanr([1, 2, 3.5, 3.5], [2, 1, 3, 4])[0])
    assert s["srcc ties broken"] == pytest.approx(0.8)  # ranks 1, 2, 3, 4 against 2, 1, 3, 4
