import math
import warnings

import numpy as np
import pytest
from scipy import stats

from omniquality_r.eval import metrics
from omniquality_r.eval.metrics import (
    POOLED,
    fit_logistic4,
    format_table,
    grouped_metrics,
    krcc,
    logistic4,
    plcc,
    plcc_logistic,
    quality_metrics,
    rmse,
    srcc,
)

KEYS = {"n", "parse_rate", "srcc", "plcc", "plcc_logistic", "krcc", "rmse"}
TRUE_PARAMS = (4.5, 0.5, 2.5, 0.6)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_tiny_example_by_hand():
    pred = [1.0, 2.0, 3.0, 10.0]
    mos = [1.0, 3.0, 2.0, 4.0]
    # ranks pred 1,2,3,4; ranks mos 1,3,2,4; d = 0,-1,1,0; sum d^2 = 2
    # SRCC = 1 - 6 * 2 / (4 * (16 - 1)) = 1 - 12/60 = 0.8
    assert srcc(pred, mos) == pytest.approx(0.8)
    # pairs (i<j): only (2,3) discordant -> C = 5, D = 1, no ties: KRCC = (5 - 1) / 6
    assert krcc(pred, mos) == pytest.approx(2 / 3)
    # pred - 4 = -3,-2,-1,6; mos - 2.5 = -1.5,.5,-.5,1.5; sum xy = 4.5-1+.5+9 = 13
    # sum x^2 = 50, sum y^2 = 5: PLCC = 13 / sqrt(250)
    assert plcc(pred, mos) == pytest.approx(13 / math.sqrt(250))
    # errors 0,-1,1,6: RMSE = sqrt(38 / 4)
    assert rmse(pred, mos) == pytest.approx(math.sqrt(9.5))


def test_ties_by_hand():
    pred = [1.0, 1.0, 2.0, 3.0]
    mos = [1.0, 2.0, 3.0, 4.0]
    # average ranks pred 1.5,1.5,3,4 (centred -1,-1,.5,1.5); mos centred -1.5,-.5,.5,1.5
    # SRCC = 4.5 / sqrt(4.5 * 5)
    assert srcc(pred, mos) == pytest.approx(4.5 / math.sqrt(22.5))
    # tau-b: C = 5, D = 0, one pair tied in pred only: 5 / sqrt((5 + 1) * 5)
    assert krcc(pred, mos) == pytest.approx(5 / math.sqrt(30))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_scipy_on_random_data(seed):
    r = np.random.default_rng(seed)
    mos = r.uniform(0, 5, 300)
    pred = np.round(mos + r.normal(0, 1.0, 300), 1)  # rounding makes ties
    assert srcc(pred, mos) == pytest.approx(stats.spearmanr(pred, mos).statistic, abs=1e-12)
    assert plcc(pred, mos) == pytest.approx(stats.pearsonr(pred, mos).statistic, abs=1e-12)
    assert krcc(pred, mos) == pytest.approx(stats.kendalltau(pred, mos).statistic, abs=1e-12)
    assert rmse(pred, mos) == pytest.approx(np.sqrt(np.mean((pred - mos) ** 2)))


def test_logistic4_formula():
    b1, b2, b3, b4 = TRUE_PARAMS
    assert logistic4(b3, *TRUE_PARAMS) == pytest.approx((b1 + b2) / 2)
    assert logistic4(np.array([-1e3, 1e3]), *TRUE_PARAMS) == pytest.approx([b2, b1])
    # |b4|: the sign of b4 does not matter
    x = np.linspace(0, 5, 7)
    np.testing.assert_allclose(logistic4(x, b1, b2, b3, -b4), logistic4(x, *TRUE_PARAMS))


def test_fit_recovers_known_parameters(rng):
    x = rng.uniform(0, 5, 200)
    fit = fit_logistic4(x, logistic4(x, *TRUE_PARAMS))
    assert fit.ok
    np.testing.assert_allclose(fit.params, TRUE_PARAMS, rtol=1e-4)


def test_plcc_logistic_beats_raw_on_monotone_nonlinear(rng):
    x = rng.uniform(0, 5, 300)
    y = logistic4(x, 4.5, 0.5, 2.5, 0.3) + rng.normal(0, 0.1, x.size)  # steep S-curve
    raw, fitted = plcc(x, y), plcc_logistic(x, y)
    assert fitted > raw + 0.03
    assert fitted == pytest.approx(stats.pearsonr(logistic4(x, *fit_logistic4(x, y).params), y)[0])


def test_fit_failure_falls_back_to_raw(monkeypatch, rng):
    def no_convergence(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(metrics, "curve_fit", no_convergence)
    x = rng.uniform(0, 5, 50)
    y = x**2
    with pytest.warns(RuntimeWarning, match="logistic4 fit failed"):
        fit = fit_logistic4(x, y)
    assert not fit.ok and fit.params is None
    np.testing.assert_array_equal(fit.map(x), x)
    with pytest.warns(RuntimeWarning, match="logistic4 fit failed"):
        assert plcc_logistic(x, y) == pytest.approx(plcc(x, y))


def test_fit_needs_four_points_and_varying_predictions():
    with pytest.warns(RuntimeWarning, match="3 finite pairs"):
        assert not fit_logistic4([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]).ok
    with pytest.warns(RuntimeWarning, match="constant predictions"):
        assert not fit_logistic4([2.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0]).ok


def test_quality_metrics_drops_unparsed(rng):
    mos = rng.uniform(0, 5, 40)
    pred = mos + rng.normal(0, 0.5, 40)
    pred[[3, 10, 20, 30]] = np.nan
    out = quality_metrics(pred, mos)
    assert set(out) == KEYS
    assert out["n"] == 40 and out["parse_rate"] == pytest.approx(36 / 40)
    ok = np.isfinite(pred)
    assert out["srcc"] == pytest.approx(stats.spearmanr(pred[ok], mos[ok]).statistic)
    assert out["rmse"] == pytest.approx(rmse(pred[ok], mos[ok]))
    assert out["plcc_logistic"] == pytest.approx(plcc_logistic(pred[ok], mos[ok]))


@pytest.mark.parametrize(
    "pred",
    [
        [2.0, 2.0, 2.0, 2.0, 2.0],  # constant predictions
        [1.0, np.nan, 3.0, np.nan, np.nan],  # only 2 parsed
        [np.nan] * 5,  # nothing parsed
    ],
)
def test_undefined_correlations_are_nan(pred):
    mos = [1.0, 2.0, 3.0, 4.0, 5.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warnings and no exceptions either
        out = quality_metrics(pred, mos)
    for key in ("srcc", "plcc", "plcc_logistic", "krcc"):
        assert math.isnan(out[key]), key
    parsed = np.isfinite(pred)
    assert out["parse_rate"] == pytest.approx(parsed.mean())
    assert math.isnan(out["rmse"]) == (not parsed.any())


def test_quality_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="mos"):
        quality_metrics([1.0, 2.0], [1.0, np.nan])
    with pytest.raises(ValueError, match="equal length"):
        quality_metrics([1.0, 2.0, 3.0], [1.0, 2.0])


def test_grouped_metrics_small_mixed_example(rng):
    task = ["technical"] * 12 + ["aesthetic"] * 6
    dataset = ["spaq"] * 6 + ["koniq"] * 6 + ["ava"] * 6
    mos = rng.uniform(0, 5, 18)
    pred = mos + rng.normal(0, 0.3, 18)
    pred[0] = np.nan
    rows = grouped_metrics(pred, mos, task, dataset)
    assert [(r["task"], r["dataset"]) for r in rows] == [
        ("aesthetic", "ava"),
        ("aesthetic", POOLED),
        ("technical", "koniq"),
        ("technical", "spaq"),
        ("technical", POOLED),
    ]
    by = {(r["task"], r["dataset"]): r for r in rows}
    assert by["technical", "spaq"]["parse_rate"] == pytest.approx(5 / 6)
    assert by["technical", POOLED]["n"] == 12
    assert by["technical", POOLED]["srcc"] == pytest.approx(srcc(pred[:12], mos[:12]))
    assert by["aesthetic", "ava"] == {
        "task": "aesthetic",
        "dataset": "ava",
        **quality_metrics(pred[12:], mos[12:]),
    }


def test_format_table_contains_the_numbers():
    rows = [
        {"task": "technical", "dataset": "koniq", "n": 1000, "parse_rate": 0.995,
         "srcc": 0.91234, "plcc": 0.8876, "plcc_logistic": 0.9301, "krcc": 0.7412, "rmse": 0.4321},
        {"task": "technical", "dataset": POOLED, "n": 12, "parse_rate": 1.0,
         "srcc": math.nan, "plcc": math.nan, "plcc_logistic": math.nan, "krcc": math.nan,
         "rmse": 1.25},
    ]  # fmt: skip
    table = format_table(rows)
    lines = table.splitlines()
    assert lines[0].split() == ["task", "dataset", "n", "parse", "SRCC", "PLCC", "PLCC-fit",
                                "KRCC", "RMSE"]  # fmt: skip
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["technical", "koniq", "1000", "0.995", "0.912", "0.888",
                                "0.930", "0.741", "0.432"]  # fmt: skip
    assert lines[3].split() == ["technical", POOLED, "12", "1.000", "nan", "nan", "nan", "nan",
                                "1.250"]  # fmt: skip
    assert len({len(line) for line in lines[:3]}) == 1  # fixed width
