"""benchmarks/gain_noise.py: the paired bootstrap of an SRCC gain."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gain_noise as bench  # benchmarks/ is a folder of scripts


def test_paired_bootstrap_of_a_model_against_itself_is_zero():
    rng = np.random.default_rng(0)
    mos, pred = rng.normal(size=200), rng.normal(size=200)
    assert bench.paired_bootstrap(mos, pred, pred, n=50) == (0.0, 0.0)


def test_paired_bootstrap_gain_and_its_spread_shrink_with_more_records():
    rng = np.random.default_rng(0)
    spreads = []
    for n in (100, 1600):
        mos = rng.normal(size=n)
        weak, strong = mos + rng.normal(size=n), mos + 0.5 * rng.normal(size=n)
        gain, sd = bench.paired_bootstrap(mos, weak, strong, n=200)
        assert gain > 0.1  # the less noisy predictor ranks better
        spreads.append(sd)
    assert spreads[1] == pytest.approx(spreads[0] / 4, rel=0.35)  # sd ~ 1 / sqrt(records)
