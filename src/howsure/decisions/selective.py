"""Items automated and errors among them at every distinct threshold: the counts the
certificate, the planner, the cost optimiser and the simulations all start from."""

from __future__ import annotations

from typing import Any

import numpy as np

from howsure.core.validation import check_confidences


def selective_counts(correct: Any, confidences: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items automated and errors among them at every distinct threshold, strict to loose.

    Parameters
    ----------
    correct : array-like of shape (n,)
    confidences : array-like of shape (n,)

    Returns
    -------
    thresholds : ndarray of shape (T,)
        The distinct confidences, descending; threshold ``thresholds[j]`` automates every item
        with confidence >= it.
    n_automated : ndarray of shape (T,), int
        Items automated at each threshold (cumulative, increasing).
    n_errors : ndarray of shape (T,), int
        Wrong items among them.
    """
    ok, conf = check_confidences(correct, confidences)
    negated, group = np.unique(-conf, return_inverse=True)
    n_automated = np.cumsum(np.bincount(group, minlength=negated.size))
    n_errors = np.cumsum(np.bincount(group, weights=~ok, minlength=negated.size)).astype(np.int64)
    return -negated, n_automated, n_errors


def selective_accuracy_curve(correct: Any, confidences: Any) -> dict[str, np.ndarray]:
    """The accuracy-versus-automation trade-off, for tables and charts.

    Returns
    -------
    dict of ndarray, each of shape (T,)
        ``threshold`` (descending), ``automation_rate`` (share of items at or above it),
        ``accuracy`` (accuracy of those items), ``n_automated``, ``n_errors``.
    """
    thresholds, n_automated, n_errors = selective_counts(correct, confidences)
    n = n_automated[-1]
    return {
        "threshold": thresholds,
        "automation_rate": n_automated / n,
        "accuracy": 1 - n_errors / n_automated,
        "n_automated": n_automated,
        "n_errors": n_errors,
    }

