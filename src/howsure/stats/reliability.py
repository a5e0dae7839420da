"""The reliability curve: mean confidence, accuracy and item count of each non-empty bin, the
numbers a reliability diagram draws."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from howsure.core.validation import check_top_label
from howsure.stats.binning import bin_index, bin_sums, check_bins


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin numbers of a reliability diagram; only bins holding at least one item.

    Attributes
    ----------
    strategy : {"uniform", "quantile"}
    n_bins : int
        Bins asked for (empty ones are left out of the arrays).
    bin_lower, bin_upper : ndarray of shape (m,)
        Bin edges for "uniform"; the smallest and largest confidence inside for "quantile".
    mean_confidence : ndarray of shape (m,)
    accuracy : ndarray of shape (m,)
    counts : ndarray of shape (m,), int
    """

    strategy: str
    n_bins: int
    bin_lower: np.ndarray
    bin_upper: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray

    @property
    def ece(self) -> float:
        """ECE recomputed from the bins: sum of count-weighted gaps."""
        return float((self.counts * np.abs(self.accuracy - self.mean_confidence)).sum() / self.counts.sum())

    def to_dict(self) -> dict:
        """Plain JSON-ready numbers."""
        return {
            "strategy": self.strategy,
            "n_bins": self.n_bins,
            "bin_lower": self.bin_lower.tolist(),
            "bin_upper": self.bin_upper.tolist(),
            "mean_confidence": self.mean_confidence.tolist(),
            "accuracy": self.accuracy.tolist(),
            "counts": self.counts.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ReliabilityCurve":
        """Inverse of `to_dict`."""
        return cls(
            strategy=data["strategy"],
            n_bins=int(data["n_bins"]),
            bin_lower=np.asarray(data["bin_lower"], float),
            bin_upper=np.asarray(data["bin_upper"], float),
            mean_confidence=np.asarray(data["mean_confidence"], float),
            accuracy=np.asarray(data["accuracy"], float),
            counts=np.asarray(data["counts"], int),
        )


def reliability_curve(correct, confidence, n_bins: int = 15, strategy: str = "uniform") -> ReliabilityCurve:
    """Mean confidence, accuracy and item count of each non-empty bin.

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    confidence : array-like of shape (n,), in [0, 1]
    n_bins : int
    strategy : {"uniform", "quantile"}
        The same binning `expected_calibration_error` uses, so the curve's `ece` equals it.

    Returns
    -------
    ReliabilityCurve
    """
    correct, confidence = check_top_label(correct, confidence)
    check_bins(n_bins, strategy)
    n_bins = int(n_bins)
    bins = bin_index(confidence[None], n_bins, strategy)[0]
    counts, conf_sums, correct_sums = (a[0] for a in bin_sums(correct[None], confidence[None], bins[None], n_bins))
    filled = counts > 0
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        lower, upper = edges[:-1][filled], edges[1:][filled]
    else:
        lower = np.array([confidence[bins == b].min() for b in np.flatnonzero(filled)])
        upper = np.array([confidence[bins == b].max() for b in np.flatnonzero(filled)])
    return ReliabilityCurve(
        strategy=strategy,
        n_bins=n_bins,
        bin_lower=lower,
        bin_upper=upper,
        mean_confidence=conf_sums[filled] / counts[filled],
        accuracy=correct_sums[filled] / counts[filled],
        counts=counts[filled].astype(int),
    )
