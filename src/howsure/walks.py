"""The multiple-testing walks over thresholds behind `howsure.decisions.certify_threshold`.

Each takes the distinct calibration thresholds (descending) and their p-values and returns the
loosest rejection; the validity arguments are in the docstring of `howsure.decisions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
