"""Inductive Venn-Abers predictors (Vovk and Petej 2014; Vovk, Petej and Fedorova 2015).

For a new score s, isotonic regression is fitted twice on the calibration items plus s, once
pretending s's outcome is 0 (giving p0) and once pretending it is 1 (giving p1). The interval
``[p0, p1]`` is how much the answer depends on that one unknown label: narrow where there is
plenty of calibration data near s, wide where there is little. The point prediction is
``p1 / (1 - p0 + p1)``, which minimises log loss against the two candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import isotonic_regression

from howsure.calibration.base import OneVsRestCalibrator
from howsure.core.validation import check_scores


def _isotonic_value_at(values: np.ndarray, weights: np.ndarray, index: int) -> float:
    """Weighted isotonic fit of the (m,) ``values`` (sorted by score), read at ``index``."""
    return float(isotonic_regression(values, weights=weights, increasing=True).x[index])


def venn_abers_table(p: np.ndarray, positive: np.ndarray) -> dict[str, np.ndarray]:
    """Precompute p0 and p1 for every place a new score can fall among the calibration scores.

    A new score enters the isotonic fit only through its rank among the calibration scores:
    below, equal to, or between the m distinct calibration scores, 2m + 1 cases in all. So two
    small isotonic fits per case at fitting time make prediction a lookup.

    Parameters
    ----------
    p : ndarray of shape (n,)
        Calibration scores.
    positive : ndarray of shape (n,)
        Their 0/1 outcomes.

    Returns
    -------
    dict
        ``"x"``: (m,) distinct scores, increasing; ``"p0"``, ``"p1"``: (2m + 1,) values, where
        entry 2g is a score strictly between ``x[g-1]`` and ``x[g]`` and entry 2g + 1 a score
        equal to ``x[g]``.
    """
    distinct, inverse = np.unique(p, return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)
    hits = np.bincount(inverse, weights=positive.astype(np.float64))
    m = distinct.size
    p0 = np.empty(2 * m + 1)
    p1 = np.empty(2 * m + 1)
    # The cases' groups, rewritten in place rather than built anew each time (np.insert and
    # copies cost more than the isotonic fits). ``tie_*``: the m calibration groups; ``new_*``:
    # m + 1 slots, the new score's slot at ``position`` and the calibration groups around it.
    tie_counts, tie_hits = counts.copy(), hits.copy()
    new_counts, new_hits = np.empty(m + 1), np.empty(m + 1)
    new_counts[1:], new_hits[1:] = counts, hits
    for case in range(2 * m + 1):
        position = case // 2
        if case % 2:  # ties with calibration score x[position]: joins its group
            case_counts, case_hits = tie_counts, tie_hits
            case_counts[position] = counts[position] + 1.0
        else:  # a new distinct score inserted before x[position]
            case_counts, case_hits = new_counts, new_hits
            if position:  # slot position - 1 goes back to calibration group position - 1
                case_counts[position - 1], case_hits[position - 1] = counts[position - 1], hits[position - 1]
            case_counts[position] = 1.0
        for outcome, table in ((0.0, p0), (1.0, p1)):
            case_hits[position] = (hits[position] if case % 2 else 0.0) + outcome
            table[case] = _isotonic_value_at(case_hits / case_counts, case_counts, position)
        if case % 2:
            case_counts[position], case_hits[position] = counts[position], hits[position]
    return {"x": distinct, "p0": p0, "p1": p1}


def _lookup(p: np.ndarray, piece: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(n,) scores -> their (p0, p1), each (n,), from a table made by :func:`venn_abers_table`."""
    x = piece["x"]
    position = np.searchsorted(x, p, side="left")
    ties = (position < x.size) & (x[np.minimum(position, x.size - 1)] == p)
    case = 2 * position + ties
    return piece["p0"][case], piece["p1"][case]


class VennAbers(OneVsRestCalibrator):
    """Inductive Venn-Abers: calibrated point predictions plus a [p0, p1] interval per item.

    Multiclass uses one-vs-rest pieces; point predictions are renormalised, intervals are the
    per-label ones (not renormalised). Fitting costs two isotonic fits per distinct calibration
    score (quadratic in that count), which is fine for a few thousand items.

    Fitted attributes
    -----------------
    pieces_ : list of dict
        ``{"x": distinct_scores, "p0": ..., "p1": ...}`` per piece (see :func:`venn_abers_table`).
    """

    name = "venn_abers"

    def _fit_binary(self, p: np.ndarray, positive: np.ndarray) -> dict[str, Any]:
        return venn_abers_table(p, positive)

    def _predict_binary(self, p: np.ndarray, piece: dict[str, Any]) -> np.ndarray:
        p0, p1 = _lookup(p, piece)
        return p1 / (1.0 - p0 + p1)

    def predict_interval(self, scores: Any) -> tuple[np.ndarray, np.ndarray]:
        """Venn-Abers interval ``(low, high)`` = (p0, p1) for each item.

        Parameters
        ----------
        scores : array-like, (n, K) label probabilities or (n,) confidences (see ``mode``)

        Returns
        -------
        low, high : ndarray
            (n,) each in confidence mode; (n, K) each in distribution mode, one interval per
            label (for binary, label 0's interval is the complement of label 1's).
        """
        self._check_fitted()
        probs = check_scores(scores, self.mode, self.n_classes_ if self.mode == "distribution" else None)
        if len(self.pieces_) == 1:
            p0, p1 = _lookup(probs[:, 1], self.pieces_[0])
            low, high = np.column_stack([1.0 - p1, p0]), np.column_stack([1.0 - p0, p1])
        else:
            bounds = [_lookup(probs[:, c], piece) for c, piece in enumerate(self.pieces_)]
            low = np.column_stack([b[0] for b in bounds])
            high = np.column_stack([b[1] for b in bounds])
        if self.mode == "confidence":
            return low[:, 1], high[:, 1]
        return low, high
