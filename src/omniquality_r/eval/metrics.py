"""Quality-prediction metrics: SRCC, PLCC (raw and after a 4-parameter logistic fit), KRCC, RMSE.

Pure functions on 1-D arrays of predicted scores `pred` and ground-truth `mos`.

Conventions shared by every metric here:
  * pairs where either value is non-finite (NaN: an answer that did not parse) are dropped;
  * a correlation is NaN, not an exception, when fewer than 3 pairs remain or either side is
    constant (the coefficient is undefined or trivially +-1);
  * RMSE is on the raw scores (both on the same 0-5 scale) and is NaN only with no pairs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.stats import kendalltau, rankdata

from ..prompts import INVALID, answer_counts

MIN_PAIRS = 3
POOLED = "all"  # dataset label of the per-task pooled row in grouped_metrics
_FLOAT_KEYS = ("parse_rate", "srcc", "plcc", "plcc_logistic", "krcc", "rmse")
_HEADERS = ("task", "dataset", "n", "parse", "SRCC", "PLCC", "PLCC-fit", "KRCC", "RMSE")


def _pairs(pred: ArrayLike, mos: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The (pred, mos) pairs with both values finite, as float64 arrays."""
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"pred and mos must be 1-D of equal length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _defined(x: np.ndarray, y: np.ndarray) -> bool:
    """A correlation is defined: at least MIN_PAIRS pairs and neither side constant."""
    return x.size >= MIN_PAIRS and np.ptp(x) > 0 and np.ptp(y) > 0


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """r = sum((x - mean x)(y - mean y)) / sqrt(sum((x - mean x)^2) sum((y - mean y)^2))."""
    xc = x - x.mean()
    yc = y - y.mean()
    r = float(np.dot(xc, yc) / math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc))))
    return max(-1.0, min(1.0, r))


def plcc(pred: ArrayLike, mos: ArrayLike) -> float:
    """Pearson linear correlation of the raw predictions with MOS (see _pearson)."""
    x, y = _pairs(pred, mos)
    return _pearson(x, y) if _defined(x, y) else math.nan


def srcc(pred: ArrayLike, mos: ArrayLike) -> float:
    """Spearman rank correlation: Pearson r of the ranks, ties given their average rank.

    Without ties this is 1 - 6 sum(d_i^2) / (n (n^2 - 1)), d_i the rank difference of pair i.
    """
    x, y = _pairs(pred, mos)
    return _pearson(rankdata(x), rankdata(y)) if _defined(x, y) else math.nan


def krcc(pred: ArrayLike, mos: ArrayLike) -> float:
    """Kendall tau-b: (C - D) / sqrt((C + D + T_x)(C + D + T_y)).

    C, D count concordant and discordant pairs; T_x, T_y pairs tied only in pred or only in mos.
    """
    x, y = _pairs(pred, mos)
    return float(kendalltau(x, y).statistic) if _defined(x, y) else math.nan


def rmse(pred: ArrayLike, mos: ArrayLike) -> float:
    """Root-mean-square error of the raw scores: sqrt(mean((pred - mos)^2))."""
    x, y = _pairs(pred, mos)
    return float(np.sqrt(np.mean((x - y) ** 2))) if x.size else math.nan


def logistic4(x: ArrayLike, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        z = -(np.asarray(x, dtype=np.float64) - b3) / abs(b4)
        return (b1 - b2) / (1.0 + np.exp(z)) + b2


@dataclass(frozen=True)
class LogisticFit:
    """Result of fit_logistic4: `params` (b1, b2, b3, |b4|), or None when `ok` is False."""

    params: tuple[float, float, float, float] | None
    ok: bool

    def map(self, pred: ArrayLike) -> np.ndarray:
        """logistic4(pred, *params); the raw predictions unchanged when the fit failed."""
        x = np.asarray(pred, dtype=np.float64)
        return logistic4(x, *self.params) if self.ok else x


def _fit_failed(reason: str) -> LogisticFit:
    warnings.warn(
        f"logistic4 fit failed ({reason}); falling back to the raw (linear) predictions",
        RuntimeWarning,
        stacklevel=3,
    )
    return LogisticFit(params=None, ok=False)


def fit_logistic4(pred: ArrayLike, mos: ArrayLike) -> LogisticFit:
    """Least-squares fit of mos ~ logistic4(pred) by scipy.optimize.curve_fit.

    Initialised at [max mos, min mos, mean pred, std pred / 4]. Needs >= 4 finite pairs and
    non-constant predictions; otherwise, or when the fit does not converge or gives non-finite
    values, a RuntimeWarning is issued and the result has ok=False (LogisticFit.map = identity).
    """
    x, y = _pairs(pred, mos)
    if x.size < 4:
        return _fit_failed(f"{x.size} finite pairs for 4 parameters")
    if np.ptp(x) == 0:
        return _fit_failed("constant predictions (std pred = 0)")
    p0 = [y.max(), y.min(), x.mean(), x.std() / 4.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # covariance of an exact fit
            popt, _ = curve_fit(logistic4, x, y, p0=p0, maxfev=20000)
    except (RuntimeError, ValueError) as err:
        return _fit_failed(str(err))
    b1, b2, b3, b4 = popt.tolist()
    if b4 == 0 or not np.all(np.isfinite(logistic4(x, *popt))):
        return _fit_failed(f"degenerate result, params {popt.tolist()}")
    return LogisticFit(params=(b1, b2, b3, abs(b4)), ok=True)


def plcc_logistic(pred: ArrayLike, mos: ArrayLike) -> float:
    """Pearson r between mos and logistic4(pred, *fit_logistic4(pred, mos).params).

    When the fit fails (warned) this equals the raw plcc. The fitted curve may be decreasing, so
    this is positive even for anti-correlated predictions: read its sign from srcc/plcc.
    """
    x, y = _pairs(pred, mos)
    if not _defined(x, y):
        return math.nan
    fitted = fit_logistic4(x, y).map(x)
    return _pearson(fitted, y) if np.ptp(fitted) > 0 else math.nan


def quality_metrics(pred: ArrayLike, mos: ArrayLike) -> dict[str, float | int]:
    """n, parse_rate (fraction of pred finite) and srcc, plcc, plcc_logistic, krcc, rmse.

    The metrics use the parsed (finite) predictions only; the correlations are NaN with fewer
    than 3 of them or when they are constant. mos must be finite.
    """
    if not np.all(np.isfinite(np.asarray(mos, dtype=np.float64))):
        raise ValueError("mos contains non-finite values")
    x, y = _pairs(pred, mos)
    n = int(np.asarray(pred).size)
    return {
        "n": n,
        "parse_rate": x.size / n if n else math.nan,
        "srcc": srcc(x, y),
        "plcc": plcc(x, y),
        "plcc_logistic": plcc_logistic(x, y),
        "krcc": krcc(x, y),
        "rmse": rmse(x, y),
    }


def grouped_metrics(
    pred: ArrayLike,
    mos: ArrayLike,
    task: Sequence[str],
    dataset: Sequence[str],
    invalid: Sequence[str] | None = None,
    looped: Sequence[bool] | None = None,
) -> list[dict[str, str | float | int]]:
    """quality_metrics per (task, dataset), then per task pooled over its datasets; with
    `invalid` (each answer's reason, "" when valid) and `looped`, their answer_counts too.

    Parallel sequences in, a flat list of dicts {task, dataset, **quality_metrics} out: tasks
    and datasets sorted by name, each task's rows followed by its pooled row (dataset POOLED).
    """
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    tasks = np.asarray(task, dtype=str)
    datasets = np.asarray(dataset, dtype=str)
    if not x.shape == y.shape == tasks.shape == datasets.shape or x.ndim != 1:
        raise ValueError("pred, mos, task and dataset must be 1-D of equal length")
    reasons = None if invalid is None else np.asarray(invalid, dtype=object)
    stopped = np.zeros(x.shape, dtype=bool) if looped is None else np.asarray(looped, dtype=bool)
    if reasons is not None and not reasons.shape == stopped.shape == x.shape:
        raise ValueError("invalid and looped must have one entry per prediction")

    def row(t: str, d: str, sel: np.ndarray) -> dict:
        counts = {} if reasons is None else answer_counts(reasons[sel], stopped[sel])
        return {"task": t, "dataset": d, **quality_metrics(x[sel], y[sel]), **counts}

    rows: list[dict[str, str | float | int]] = []
    for t in sorted(set(tasks.tolist())):
        in_task = tasks == t
        for d in sorted(set(datasets[in_task].tolist())):
            rows.append(row(t, d, in_task & (datasets == d)))
        rows.append(row(t, POOLED, in_task))
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """Fixed-width text table: task, dataset, n, parse, SRCC, PLCC, PLCC-fit, KRCC, RMSE, and
    with answer_counts the invalid answers by reason and the looped generations.

    Rows are dicts as returned by grouped_metrics (task/dataset may be absent); floats to 3
    decimals, NaN printed as "nan".
    """
    counted = bool(rows) and all("invalid" in r for r in rows)
    headers = (*_HEADERS, "invalid (why)", "looped") if counted else _HEADERS
    body = [
        [str(r.get("task", "")), str(r.get("dataset", "")), str(r["n"])]
        + [f"{float(r[k]):.3f}" for k in _FLOAT_KEYS]
        + ([_why(r), str(r["looped"])] if counted else [])
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(headers, *body)]

    def line(cells: Sequence[str]) -> str:
        left = [c.ljust(w) for c, w in zip(cells[:2], widths[:2])]
        right = [c.rjust(w) for c, w in zip(cells[2:], widths[2:])]
        return "  ".join(left + right).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(cells) for cells in body)])


def _why(row: dict) -> str:
    """`31 (no_answer 30, out_of_range 1)`, or `0`."""
    parts = [f"{r} {row[f'invalid_{r}']}" for r in INVALID if row[f"invalid_{r}"]]
    return f"{row['invalid']} ({', '.join(parts)})" if parts else "0"
