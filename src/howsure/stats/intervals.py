"""Confidence intervals: the percentile interval of bootstrap replicates, and the exact
(Clopper-Pearson) binomial interval of a proportion, vectorised, with a one-count convenience."""

from __future__ import annotations

from typing import Any

import numpy as np

from howsure.errors import DataError

__all__ = ["clopper_pearson", "clopper_pearson_one", "percentile_interval"]


def percentile_interval(
    point: float, replicates: np.ndarray, level: float, recentre: bool = False
) -> dict[str, float]:
    """Percentile interval of the replicates; with ``recentre``, of the replicates shifted by
    the bootstrap's estimate of the estimator's bias (their mean minus the estimate), which is
    reported as ``bias``: the interval then shows the estimate's sampling spread around itself
    instead of adding the bias a second time, and the estimate lies inside it."""
    replicates = replicates[~np.isnan(replicates)]
    if np.isnan(point) or replicates.size == 0:
        empty = {"value": float(point), "low": float("nan"), "high": float("nan")}
        return {**empty, "bias": float("nan")} if recentre else empty
    tail = (1.0 - level) / 2.0 * 100.0
    bias = float(replicates.mean() - point) if recentre else 0.0
    low, high = np.percentile(replicates - bias, [tail, 100.0 - tail])
    entry = {"value": float(point), "low": float(low), "high": float(high)}
    if recentre:
        # A calibration error lies in [0, 1]: the shifted replicates may not.
        entry.update(low=max(0.0, entry["low"]), high=min(1.0, entry["high"]), bias=bias)
    return entry


def _check_level(level: Any) -> float:
    try:
        value = float(level)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise DataError(f"level = {level!r}; expected a coverage strictly between 0 and 1")
    return value


def clopper_pearson(successes: Any, trials: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided binomial interval of a proportion, vectorised.

    Parameters
    ----------
    successes, trials : array-like, broadcastable (e.g. shape (m,))
        ``0 <= successes <= trials``. Non-integer counts are accepted (an effective sample size
        of weighted items); the beta quantiles extend the interval continuously.
    level : float
        Coverage, e.g. 0.95: each side leaves out ``(1 - level) / 2``.

    Returns
    -------
    low, high : ndarray of the broadcast shape; NaN where ``trials`` is 0. ``low`` is 0 where
    there is no success and ``high`` 1 where every trial succeeded.

    Raises
    ------
    DataError
        A level outside (0, 1), a negative or NaN count, or more successes than trials.
    """
    from scipy.stats import beta as beta_distribution  # scipy.stats is slow to import

    tail = (1.0 - _check_level(level)) / 2.0
    k, n = np.broadcast_arrays(np.asarray(successes, float), np.asarray(trials, float))
    bad = np.argwhere(~((0 <= k) & (k <= n)))
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        raise DataError(
            f"successes = {float(k[where])!r} and trials = {float(n[where])!r} at index {where}; "
            "expected 0 <= successes <= trials"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, beta_distribution.ppf(tail, k, n - k + 1), 0.0)
        high = np.where(k < n, beta_distribution.isf(tail, k + 1, n - k), 1.0)
    empty = n == 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def clopper_pearson_one(successes: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """`clopper_pearson` of one count: ``(low, high)`` as floats.

    Parameters
    ----------
    successes, n : int or float
        ``0 <= successes <= n``, ``n >= 1``.
    level : float
        Coverage, e.g. 0.95.

    Raises
    ------
    DataError
        ``n < 1`` or ``successes`` outside ``[0, n]``.
    """
    if not n >= 1 or not 0 <= successes <= n:
        raise DataError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    low, high = clopper_pearson(successes, n, level)
    return float(low), float(high)
