"""The multiple-testing walks over thresholds behind `howsure.decisions.certify_threshold`, and
their start thresholds.

Each takes the distinct calibration thresholds (descending) and their p-values and returns the
loosest rejection; `certify_walk` picks the walk of a method. The validity arguments are in the
docstring of `howsure.decisions.certification`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from howsure.core.validation import check_target
from howsure.errors import PolicyError

# Data-independent starts of the fallback and multistart walks. Raw language-model
# confidences pile up just below 1, calibrated ones spread over [1/K, 1]; the starts cover both.
DEFAULT_STARTS = (0.999999, 0.99999, 0.9999, 0.999, 0.998, 0.995, 0.99, 0.95, 0.9, 0.8, 0.7, 0.6)
# Calibrated confidences mean what they say, so the loosest threshold meeting the target sits
# near the target itself: starts at these multiples of the error budget ``1 - target`` below 1
# (for 0.9: 0.975, 0.95, 0.925, 0.9, 0.875). Fewer, better placed starts split delta less;
# measured against the population optimum by docs/scripts/oracle_share.py.
CALIBRATED_START_MULTIPLES = (0.25, 0.5, 0.75, 1.0, 1.25)


def calibrated_starts(target_accuracy: float) -> tuple[float, ...]:
    """Start thresholds for confidences from a calibrator fitted on other items (they depend
    on the target only, so they are fixed before the calibration labels are seen)."""
    alpha = 1 - check_target(target_accuracy)
    return tuple(max(0.0, 1 - alpha * m) for m in CALIBRATED_START_MULTIPLES)


def last_rejected(p_values: np.ndarray, level: float, first: int) -> int:
    """Fixed-sequence testing: index of the last hypothesis rejected when testing in order
    from ``first`` and stopping at the first p-value above ``level``; ``first - 1`` if none."""
    if first >= p_values.size:
        return first - 1
    fails = np.flatnonzero(p_values[first:] > level)
    return (first + fails[0] if fails.size else p_values.size) - 1


def start_index(thresholds: np.ndarray, start: float) -> int:
    """Index of the calibration threshold whose items the threshold ``start`` automates (the
    smallest calibration confidence >= start); -1 when ``start`` automates nothing."""
    return int(np.searchsorted(-thresholds, -start, side="right")) - 1


def multistart_walk(thresholds: np.ndarray, p: np.ndarray, starts: Sequence[float],
                    delta: float) -> tuple[float, float, int] | None:
    """One fixed-sequence walk from each start at ``delta / S`` (Bonferroni); the loosest
    rejection as (threshold, start of its walk, index), or None."""
    chosen = None
    level = delta / len(starts)
    for start in starts:
        first = start_index(thresholds, start)
        if first < 0:
            continue
        last = last_rejected(p, level, first)
        if last < first:
            continue
        # Thresholds in (thresholds[last + 1], start] were rejected; ship the calibration
        # confidence at the loose end unless the walk never got below `start`.
        candidate = min(float(thresholds[last]), start)
        if chosen is None or candidate < chosen[0]:
            chosen = (candidate, start, last)
    return chosen


def fallback_walk(thresholds: np.ndarray, p: np.ndarray, starts: Sequence[float],
                  delta: float) -> tuple[float, float, int] | None:
    """The fallback procedure (Wiens 2003) over the continuum of thresholds, strict to loose.

    Each start carries ``delta / S``. The walk tests every threshold at the level it has
    collected: a start reached while every threshold since the walk's own start was rejected
    adds its share to the level; a start reached after a failure begins a new walk with its
    share alone. Returns the loosest rejection as (threshold, start of its walk, index), or None.
    """
    share = delta / len(starts)
    chosen = None
    level, alive, walk_start = 0.0, False, 1.0
    for j, start in enumerate(starts):
        first = start_index(thresholds, start)
        if first < 0:  # automates nothing: untestable, and no walk can have reached it alive
            alive = False
            continue
        if alive:
            level += share
        else:
            level, walk_start = share, start
        # This start's stretch of the continuum runs down to just above the next start; the
        # thresholds there select the items of indices first .. end.
        end = (start_index(thresholds, np.nextafter(starts[j + 1], 2.0)) if j + 1 < len(starts)
               else thresholds.size - 1)
        fails = np.flatnonzero(p[first:end + 1] > level)
        last = first + int(fails[0]) - 1 if fails.size else end
        alive = not fails.size
        if last >= first:
            candidate = min(float(thresholds[last]), start)
            if chosen is None or candidate < chosen[0]:
                chosen = (candidate, walk_start, last)
    return chosen


def check_starts(method: str, starts: Sequence[float]) -> tuple[float, ...]:
    """The start thresholds of a ``fallback`` or ``multistart`` walk, distinct and strict to
    loose; `PolicyError` when there are none or one lies outside [0, 1]."""
    used = tuple(sorted({float(s) for s in starts}, reverse=True))
    if not used or any(not 0 <= s <= 1 for s in used):
        raise PolicyError(f"{method} needs start thresholds in [0, 1], got {list(starts)!r}")
    return used


def certify_walk(
    method: str,
    thresholds: np.ndarray,
    n_automated: np.ndarray,
    n_errors: np.ndarray,
    alpha: float,
    delta: float,
    p_func: Callable[[Any, Any, float], np.ndarray],
    starts: Sequence[float],
) -> tuple[tuple[float, float, int] | None, tuple[float, ...]]:
    """Run ``method``'s walk over thresholds (strict to loose) with ``n_automated`` items and
    ``n_errors`` errors each (counts may be fractional: the planner's expected counts).

    Returns
    -------
    chosen : (threshold, strictest certified threshold, index) or None
        The loosest rejection; None when nothing is rejected.
    starts : tuple of float
        The starts the walk used, strict to loose; empty for ``fixed_sequence``, which begins
        at the strictest threshold that could be rejected at all.
    """
    p = p_func(n_errors, n_automated, alpha)
    if method == "fixed_sequence":
        testable = np.flatnonzero(p_func(0, n_automated, alpha) <= delta)
        if not testable.size:
            return None, ()
        first = int(testable[0])
        last = last_rejected(p, delta, first)
        return ((float(thresholds[last]), float(thresholds[first]), last) if last >= first else None), ()
    used = check_starts(method, starts)
    walk = fallback_walk if method == "fallback" else multistart_walk
    return walk(thresholds, p, used, delta), used


def top_slice_below_target(n_auto: np.ndarray, n_err: np.ndarray, alpha: float, m0: int) -> tuple[int, float] | None:
    """Evidence against the extra condition of the fixed_sequence walk: the largest top slice
    of fewer than ``m0`` calibration items whose accuracy is below ``1 - alpha``, as (items,
    accuracy); None when every such slice reaches the target. Counts are cumulative, strict to
    loose (`howsure.decisions.selective_counts`)."""
    small = np.flatnonzero((n_auto < m0) & (n_err / np.maximum(n_auto, 1) > alpha + 1e-12))
    if not small.size:
        return None
    last = int(small[-1])
    return int(n_auto[last]), float(1 - n_err[last] / n_auto[last])
