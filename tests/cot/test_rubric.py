"""The analyst's fitted rubric (cot/rubric.py) against hand-computed values."""

import math

import numpy as np
import pytest
from scipy.optimize import isotonic_regression

from omniquality_r.cot.rubric import MonotoneMap, fit_monotone, fit_rubric


def test_fit_monotone_pools_adjacent_violators_and_picks_the_direction():
    up = fit_monotone(np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0]))
    assert up.xs == (0.0, 1.0, 2.0, 3.0) and up.ys == (1.0, 2.5, 2.5, 4.0)  # 3, 2 pooled
    down = fit_monotone(np.array([0.0, 1.0, 2.0]), np.array([5.0, 1.0, 2.0]))
    assert down.ys == (5.0, 1.5, 1.5)
    # repeated x values are averaged first, then weighted by their count
    tied = fit_monotone(np.array([0.0, 0.0, 1.0]), np.array([1.0, 3.0, 1.0]), increasing=True)
    assert tied.xs == (0.0, 1.0) and tied.ys == pytest.approx((5 / 3, 5 / 3))
    peer = isotonic_regression([2.0, 1.0], weights=[2.0, 1.0]).x  # scipy, on the means
    assert tied.ys == pytest.approx(tuple(peer))
    assert MonotoneMap((0.0, 2.0), (1.0, 3.0))(np.array([-1.0, 1.0, 5.0])).tolist() == [1, 2, 3]


def test_additive_rule_is_recovered_with_weights_in_mos_units():
    rng = np.random.default_rng(0)
    v = rng.uniform(0, 1, (400, 3))
    mos = 0.5 + 3.0 * v[:, 0] + 1.5 * (1 - v[:, 1])  # the third says nothing
    rubric = fit_rubric(["a", "b", "c"], v, mos)
    assert rubric.weights[0] == pytest.approx(3.0, abs=0.15)
    assert rubric.weights[1] == pytest.approx(1.5, abs=0.15)
    assert rubric.weights[2] < 0.3
    g = rubric.grades(np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]]))
    assert g[0, :2] == pytest.approx([1.0, 1.0], abs=0.05)  # best values grade 1 ...
    assert g[1, :2] == pytest.approx([0.0, 0.0], abs=0.05)  # ... worst 0, either direction
    assert rubric.score(g[:, :]).tolist() == pytest.approx([5.0, 0.5], abs=0.2)


def test_two_sided_criterion_finds_its_centre_and_nan_grades_half():
    rng = np.random.default_rng(1)
    v = rng.uniform(0, 1, (300, 1))
    mos = 5.0 - 8.0 * np.abs(v[:, 0] - 0.3)
    rubric = fit_rubric(["exposure"], v, mos, two_sided=[True])
    assert rubric.centres[0] == pytest.approx(0.3, abs=0.05)
    g = rubric.grades(np.array([[0.3], [1.0], [math.nan]]))[:, 0]  # 1.0: the farthest
    assert g[0] > 0.95 and g[1] < 0.05 and g[2] == 0.5


def test_a_flat_criterion_weighs_nothing_and_too_few_records_are_refused():
    v = np.column_stack([np.arange(10.0), np.ones(10)])
    rubric = fit_rubric(["x", "constant"], v, np.linspace(0, 5, 10))
    assert rubric.maps[1] is None and rubric.weights[1] == 0.0
    assert rubric.grades(v)[:, 1].tolist() == [0.5] * 10
    with pytest.raises(ValueError, match="needs 8"):
        fit_rubric(["x"], np.zeros((3, 1)), np.zeros(3))
