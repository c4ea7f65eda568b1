"""benchmarks/feature_ceiling.py: its probes recover a known MOS rule from features."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import feature_ceiling as bench  # benchmarks/ is a folder of scripts


def splits(rule, n=(300, 100, 200), d=20, seed=0):
    """Random features (one column scaled by 100: the probes standardise) and a MOS rule."""
    rng = np.random.default_rng(seed)
    x = {k: rng.normal(size=(m, d)) * np.r_[100.0, np.ones(d - 1)]
         for k, m in zip(("train", "val", "test"), n)}  # fmt: skip
    return x, {k: rule(v) + 0.05 * rng.normal(size=len(v)) for k, v in x.items()}


def test_ridge_probe_recovers_a_linear_rule_and_not_a_rule_it_cannot_express():
    x, y = splits(lambda v: v[:, 0] / 100 - 2 * v[:, 3])
    predict = bench.ridge_probe(x, y)
    assert bench.srcc(predict(x["test"]), y["test"]) > 0.99
    x, y = splits(lambda v: v[:, 1] ** 2)  # even in the feature: no linear signal
    assert abs(bench.srcc(bench.ridge_probe(x, y)(x["test"]), y["test"])) < 0.2


def test_mlp_probe_learns_a_nonlinear_rule_the_ridge_probe_misses():
    x, y = splits(lambda v: v[:, 1] ** 2, n=(1000, 200, 300), d=5)
    mlp = bench.mlp_probe(x, y, epochs=300)
    assert bench.srcc(mlp(x["test"]), y["test"]) > 0.8
    assert np.array_equal(mlp(x["test"]), mlp(x["test"]))  # eval mode: dropout off
