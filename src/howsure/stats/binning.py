"""How confidences are cut into bins: equal-width and equal-mass bins, groups of a fixed size,
and per-bin sums, all row-wise on (B, n) arrays so a bootstrap is a few numpy calls.

Binning conventions (stated because published numbers differ by them):

* ``"uniform"`` (equal width): bin b covers (b/n_bins, (b+1)/n_bins]; a confidence of
  exactly 0 goes into the first bin. This reproduces the public Llama-3.1-8B run's 20-bin ECE
  (``tests/test_metrics.py::test_reproduces_public_llama_run_raw_numbers``).
* ``"quantile"`` (equal mass): items are sorted by confidence (stable sort) and split into
  ``n_bins`` consecutive groups whose sizes differ by at most one, as ``numpy.array_split``
  does; equal confidences may straddle a group boundary.
* RMS calibration error uses groups of ``beta`` consecutive items in confidence order, the
  last group taking the remainder (Hendrycks et al.'s ``calib_err``, used by SimpleQA-style
  evaluations). Unlike that reference loop, the last group is counted too.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from howsure.errors import DataError

STRATEGIES = ("uniform", "quantile")
STRATEGY_NAMES = {"uniform": "equal-width", "quantile": "equal-mass"}


def check_bins(n_bins: int, strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise DataError(f"binning strategy {strategy!r} is unknown; expected one of {STRATEGIES}")
    if int(n_bins) != n_bins or n_bins < 1:
        raise DataError(f"n_bins = {n_bins!r}; expected a positive integer")


def bin_index(confidence: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    """Bin of every item, row by row.

    Parameters
    ----------
    confidence : ndarray of shape (B, n)
    n_bins : int
    strategy : {"uniform", "quantile"}

    Returns
    -------
    ndarray of shape (B, n), int64 in [0, n_bins)
    """
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        # side="left" puts a value equal to an edge into the bin below it: bins are (lo, hi].
        index = np.searchsorted(edges, confidence, side="left") - 1
        return np.clip(index, 0, n_bins - 1)
    return rank_groups(confidence, lambda rank, n: array_split_group(rank, n, n_bins))


def array_split_group(rank: np.ndarray, n: int, n_groups: int) -> np.ndarray:
    """Group of each rank when n items are cut as ``numpy.array_split(range(n), n_groups)``:
    the first ``n % n_groups`` groups hold one item more than the rest."""
    size, larger = divmod(n, n_groups)
    boundary = larger * (size + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        beyond = larger + (rank - boundary) // max(size, 1)
    return np.where(rank < boundary, rank // (size + 1), beyond)


def rank_groups(confidence: np.ndarray, group_of_rank: Callable) -> np.ndarray:
    """Assign items to groups by their rank in confidence order (stable), row by row."""
    n = confidence.shape[1]
    order = np.argsort(confidence, axis=1, kind="stable")
    groups = np.empty_like(order)
    np.put_along_axis(groups, order, group_of_rank(np.arange(n), n)[None, :], axis=1)
    return groups


def bin_sums(correct: np.ndarray, confidence: np.ndarray, groups: np.ndarray, n_groups: int):
    """Per-row, per-group item count, confidence sum and correct sum.

    Parameters
    ----------
    correct, confidence : ndarray of shape (B, n)
    groups : ndarray of shape (B, n), int in [0, n_groups)

    Returns
    -------
    counts, confidence_sums, correct_sums : ndarray of shape (B, n_groups)
    """
    rows = correct.shape[0]
    flat = (groups + n_groups * np.arange(rows)[:, None]).ravel()
    size = rows * n_groups
    counts = np.bincount(flat, minlength=size).reshape(rows, n_groups)
    confidence_sums = np.bincount(flat, weights=confidence.ravel(), minlength=size)
    correct_sums = np.bincount(flat, weights=correct.ravel(), minlength=size)
    return counts, confidence_sums.reshape(rows, n_groups), correct_sums.reshape(rows, n_groups)
