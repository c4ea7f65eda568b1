"""The analyst's rubric, fitted on a training split's MOS (never taken from a data generator).

A task's rubric turns the analyst's measurements v_1..v_c of an image into per-criterion
grades and a score, as an additive isotonic model:

  fit      MOS ~ mean + sum_i f_i(u_i), each f_i monotone (isotonic regression, its direction
           chosen by the first fit), by backfitting: BACKFIT_ROUNDS rounds of fitting each f_i
           to the residual of the others. u_i = v_i, or |v_i - c_i| for a two-sided criterion
           (exposure: too dark and too bright both lose), c_i the candidate centre (a quantile
           of v_i) whose fit has the least squared error
  grade    g_i = (f_i(u_i) - min f_i) / w_i in [0, 1] (1 = best), weight w_i = max f_i - min f_i
  score    calibration(sum_i w_i g_i): isotonic regression of MOS on the weighted sum,
           clipped to [0, 5]

A measurement that is NaN (no edge to judge sharpness by) grades 0.5. A criterion whose fit
is flat (the measurement says nothing about MOS on this data) grades 0.5 and weighs 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import isotonic_regression

MIN_RECORDS = 8  # fewer training records per task cannot support the fit
CENTRE_QUANTILES = np.linspace(0.05, 0.95, 19)  # candidate centres of a two-sided criterion
BACKFIT_ROUNDS = 6


@dataclass(frozen=True)
class MonotoneMap:
    """A monotone piecewise-linear map through (xs, ys), xs increasing, constant outside."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        return np.interp(np.asarray(x, dtype=np.float64), self.xs, self.ys)


def fit_monotone(x: np.ndarray, y: np.ndarray, increasing: bool | None = None) -> MonotoneMap:
    """Least-squares monotone fit of y on x (isotonic regression; increasing or decreasing as
    given, None: whichever has the smaller squared error); knots at the distinct x values."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keys, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=y)
    counts = np.bincount(inverse).astype(np.float64)
    means = sums / counts
    best = None
    for up in (True, False) if increasing is None else (increasing,):
        fitted = isotonic_regression(means, weights=counts, increasing=up).x
        sse = float((counts * (fitted - means) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, fitted)
    return MonotoneMap(tuple(keys.tolist()), tuple(best[1].tolist()))


@dataclass(frozen=True)
class Rubric:
    """One task's fitted rubric (module docstring): per-criterion maps, weights, calibration."""

    criteria: tuple[str, ...]
    centres: tuple[float | None, ...]  # c_i of a two-sided criterion, else None
    maps: tuple[MonotoneMap | None, ...]  # None: a flat fit (grade 0.5, weight 0)
    weights: tuple[float, ...]
    calibration: MonotoneMap

    def grades(self, values: np.ndarray) -> np.ndarray:
        """[n, c] measurements -> [n, c] grades in [0, 1]."""
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        out = np.full(values.shape, 0.5)
        for i, (m, c) in enumerate(zip(self.maps, self.centres)):
            if m is None:
                continue
            low, high = min(m.ys), max(m.ys)
            ok = np.isfinite(values[:, i])
            u = values[ok, i] if c is None else np.abs(values[ok, i] - c)
            out[ok, i] = (m(u) - low) / (high - low)
        return out

    def score(self, grades: np.ndarray) -> np.ndarray:
        """[n, c] (or [c]) grades -> scores in [0, 5]."""
        s = np.atleast_2d(grades) @ np.asarray(self.weights)
        return np.clip(self.calibration(s), 0.0, 5.0)


def _sse(m: MonotoneMap, x: np.ndarray, y: np.ndarray) -> float:
    return float(((m(x) - y) ** 2).sum())


def _transformed(v: np.ndarray, centre: float | None) -> np.ndarray:
    return v if centre is None else np.abs(v - centre)


def fit_criterion(v: np.ndarray, target: np.ndarray, two_sided: bool, increasing: bool | None
                  ) -> tuple[float | None, MonotoneMap]:  # fmt: skip
    """(centre, map) of one criterion fitted to `target` (MOS or a partial residual) from its
    measurements `v` (module docstring)."""
    if not two_sided:
        return None, fit_monotone(v, target, increasing)
    fits = [(float(c), fit_monotone(np.abs(v - c), target, increasing=False))
            for c in np.unique(np.quantile(v, CENTRE_QUANTILES))]  # fmt: skip
    return min(fits, key=lambda f: _sse(f[1], np.abs(v - f[0]), target))


def fit_rubric(criteria: Sequence[str], values: np.ndarray, mos: np.ndarray,
               two_sided: Sequence[bool] = (), rounds: int = BACKFIT_ROUNDS) -> Rubric:  # fmt: skip
    """The rubric (module docstring) from [n, c] measurements and n MOS on [0, 5];
    `two_sided` flags criteria (default none) whose best value lies inside the range."""
    values = np.asarray(values, dtype=np.float64)
    mos = np.asarray(mos, dtype=np.float64)
    if values.ndim != 2 or values.shape != (len(mos), len(criteria)):
        raise ValueError(f"values {values.shape} must be [n, {len(criteria)}] for {len(mos)} MOS")
    if len(mos) < MIN_RECORDS:
        raise ValueError(f"{len(mos)} training records; the rubric's fit needs {MIN_RECORDS}")
    sided = tuple(two_sided) or (False,) * len(criteria)
    finite = np.isfinite(values)
    usable = [i for i in range(len(criteria)) if finite[:, i].sum() >= 2]
    centres: list[float | None] = [None] * len(criteria)
    maps: list[MonotoneMap | None] = [None] * len(criteria)
    directions: list[bool | None] = [None] * len(criteria)
    parts = np.zeros(values.shape)  # f_i(u_i), centred; 0 where the measurement is NaN
    base = float(mos.mean())
    for _ in range(rounds):  # backfitting: each f_i on the residual of the others
        for i in usable:
            ok = finite[:, i]
            residual = mos - base - parts.sum(axis=1) + parts[:, i]
            centres[i], maps[i] = fit_criterion(values[ok, i], residual[ok], sided[i],
                                                directions[i])  # fmt: skip
            m = maps[i]
            directions[i] = m.ys[-1] >= m.ys[0] if sided[i] is False else None
            fitted = m(_transformed(values[ok, i], centres[i]))
            parts[:, i] = 0.0
            parts[ok, i] = fitted - fitted.mean()
    maps = [m if m is not None and max(m.ys) > min(m.ys) else None for m in maps]
    centres = [c if m is not None else None for c, m in zip(centres, maps)]
    weights = [max(m.ys) - min(m.ys) if m else 0.0 for m in maps]
    partial = Rubric(tuple(criteria), tuple(centres), tuple(maps), tuple(weights),
                     MonotoneMap((0.0, 1.0), (0.0, 1.0)))  # fmt: skip
    combined = partial.grades(values) @ np.asarray(weights)
    calibration = fit_monotone(combined, mos, increasing=True)
    return Rubric(tuple(criteria), tuple(centres), tuple(maps), tuple(weights), calibration)
