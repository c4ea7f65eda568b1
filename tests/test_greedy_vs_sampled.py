"""benchmarks/greedy_vs_sampled.headroom against hand-computed values."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "greedy_vs_sampled.py"
spec = importlib.util.spec_from_file_location("greedy_vs_sampled", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_headroom_hand_values():
    mos = [1.0, 2.0, 3.0, 4.0]
    greedy = [2.0, 2.0, 3.5, 3.5]  # two distinct values, tied pairs
    samples = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, math.nan], [4.0, 5.0]])
    row = bench.headroom(mos, greedy, samples, [0.5, 1.0, 0.8, 0.8],
                         np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [1.0, 0.5]]))
    assert row["n"] == 4
    assert row["distinct greedy"] == 2
    # greedy ranks (1.5, 1.5, 3.5, 3.5) against (1, 2, 3, 4): Pearson of the ranks.
    expected = np.corrcoef([1.5, 1.5, 3.5, 3.5], [1, 2, 3, 4])[0, 1]
    assert row["greedy SRCC"] == pytest.approx(expected)
    # sample means 2, 2, 3 (the NaN skipped), 4.5: ranks 1.5, 1.5, 3, 4.
    expected = np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1]
    assert row["mean-of-samples SRCC"] == pytest.approx(expected)
    assert row["sample sd"] == pytest.approx((1.0 + 0.0 + 0.0 + 0.5) / 4)
    assert row["reward greedy"] == pytest.approx(0.775)
    assert row["reward samples"] == pytest.approx(5.5 / 8)
