"""Plan the labelling: how much a calibration set of a given size would certify, and how many
labelled items a target needs, extrapolated from a pilot set's accuracy profile (a plug-in
forecast, not a bound)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from howsure.core.validation import check_choice, check_delta, check_target
from howsure.decisions.pvalues import DEFAULT_METHOD, METHODS, p_value_function
from howsure.decisions.selective import selective_counts
from howsure.decisions.walks import DEFAULT_STARTS, certify_walk
from howsure.errors import PolicyError

# The sample-size planner extrapolates the observed accuracy profile only over thresholds
# that automate at least this many calibration items (a tenth of a small pilot set): a top
# slice of a handful of items says nothing reliable about its population share.
PLANNING_MIN_ITEMS = 20
PLANNING_MIN_FLOOR = 5


def _planning_profile(confidences: Any, correct: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(threshold, share automated, error rate among automated) at each threshold worth
    extrapolating, strict to loose."""
    thresholds, n_auto, n_err = selective_counts(correct, confidences)
    n = n_auto[-1]
    keep = n_auto >= min(PLANNING_MIN_ITEMS, max(PLANNING_MIN_FLOOR, n // 10), n)
    return thresholds[keep], n_auto[keep] / n, n_err[keep] / n_auto[keep]


def _planned_share(profile: tuple[np.ndarray, np.ndarray, np.ndarray], n_labels: float, alpha: float,
                   delta: float, p_func, method: str = DEFAULT_METHOD,
                   starts: Sequence[float] = DEFAULT_STARTS) -> float:
    """Automation share ``method`` would certify if a calibration set of ``n_labels`` items
    showed exactly the observed profile."""
    thresholds, share, error_rate = profile
    counts = n_labels * share
    chosen, _ = certify_walk(method, thresholds, counts, counts * error_rate, alpha, delta, p_func, starts)
    return 0.0 if chosen is None else float(share[chosen[2]])


def planned_automation_share(
    correct: Any,
    confidences: Any,
    n_labels: int,
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    *,
    p_value: str = "binomial",
    method: str = DEFAULT_METHOD,
    starts: Sequence[float] = DEFAULT_STARTS,
) -> float:
    """Share of items a calibration set of ``n_labels`` would certify for automation, if it
    showed the observed accuracy profile exactly (a plug-in forecast, not a bound).

    Parameters
    ----------
    correct, confidences : array-like of shape (n,)
        A pilot calibration set.
    n_labels : int
        Size of the calibration set being planned.

    Returns
    -------
    float in [0, 1]
    """
    alpha = 1 - check_target(target_accuracy)
    return _planned_share(_planning_profile(confidences, correct), float(n_labels), alpha, check_delta(delta),
                          p_value_function(p_value),
                          check_choice(method, METHODS, "certification method"), starts)


def labels_needed(
    correct: Any,
    confidences: Any,
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    *,
    automation_rate: float | None = None,
    p_value: str = "binomial",
    method: str = DEFAULT_METHOD,
    starts: Sequence[float] = DEFAULT_STARTS,
    max_labels: int = 10_000_000,
) -> int | None:
    """Labelled items needed to certify ``target_accuracy`` while automating at least
    ``automation_rate`` (any positive share when None), if the observed profile holds.

    Parameters
    ----------
    correct, confidences : array-like of shape (n,)
        A pilot calibration set whose accuracy profile is extrapolated.
    automation_rate : float in (0, 1], optional

    Returns
    -------
    int or None
        The smallest calibration-set size that would do it; None when the observed profile
        never reaches the target at that automation rate, whatever the number of labels.
    """
    profile = _planning_profile(confidences, correct)
    alpha = 1 - check_target(target_accuracy)
    delta = check_delta(delta)
    check_choice(method, METHODS, "certification method")
    p_func = p_value_function(p_value)
    if automation_rate is not None and not 0 < automation_rate <= 1:
        raise PolicyError(f"automation rate must be in (0, 1], got {automation_rate!r}")
    wanted = automation_rate if automation_rate is not None else 0.0

    def enough(n_labels: float) -> bool:
        reached = _planned_share(profile, n_labels, alpha, delta, p_func, method, starts)
        return reached >= wanted and reached > 0

    # Double until enough: the first size that works, not the largest, is wanted, and at
    # huge sizes the walk would start inside the thin top slices the profile cannot judge.
    low, high = 1, 1
    while not enough(high):
        if high >= max_labels:
            return None
        low, high = high, min(high * 2, max_labels)
    while high - low > 1:  # enough(high) holds and enough(low) does not (or low == 1)
        mid = (low + high) // 2
        if enough(mid):
            high = mid
        else:
            low = mid
    return low if enough(low) else high

