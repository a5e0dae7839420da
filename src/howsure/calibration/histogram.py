"""Histogram binning (Zadrozny and Elkan 2001): the observed frequency in the score's bin.

Bins hold equal numbers of calibration items. Simple and easy to explain ("of the items that
scored like this, 87 % were right"), but its output is a step function with ``n_bins`` values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from howsure.calibration.base import OneVsRestCalibrator
from howsure.errors import CalibrationError


def equal_mass_edges(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner bin edges that split the (n,) scores ``p`` into up to ``n_bins`` non-empty bins.

    Returns
    -------
    ndarray of shape (n_edges,)
        Increasing edges; bin j holds scores in ``[edges[j-1], edges[j])`` (``searchsorted``
        with ``side="right"``), so there are ``n_edges + 1 <= n_bins`` bins. Tied scores make
        fewer bins: a bin that would be empty is merged into its neighbour.
    """
    edges = np.unique(np.quantile(p, np.arange(1, n_bins) / n_bins))
    while edges.size:
        counts = np.bincount(np.searchsorted(edges, p, side="right"), minlength=edges.size + 1)
        empty = np.flatnonzero(counts == 0)
        if empty.size == 0:
            break
        # Dropping the edge on the empty bin's left merges it into the previous bin.
        edges = np.delete(edges, max(int(empty[0]) - 1, 0))
    return edges


class HistogramBinning(OneVsRestCalibrator):
    """Map a score to the frequency of the positive outcome in its equal-mass bin.

    Parameters
    ----------
    mode : {"distribution", "confidence"}
    n_bins : int
        Number of equal-mass bins (fewer when scores tie), >= 1.

    Fitted attributes
    -----------------
    pieces_ : list of dict
        ``{"edges": inner_edges, "values": per_bin_frequency}`` per piece.
    """

    name = "histogram"
    param_names = ("n_bins",)

    def __init__(self, mode: str = "distribution", n_bins: int = 10) -> None:
        super().__init__(mode)
        if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
            raise CalibrationError(f"n_bins must be an integer >= 1, got {n_bins!r}")
        self.n_bins = int(n_bins)

    def _fit_binary(self, p: np.ndarray, positive: np.ndarray) -> dict[str, Any]:
        edges = equal_mass_edges(p, self.n_bins)
        bins = np.searchsorted(edges, p, side="right")
        counts = np.bincount(bins, minlength=edges.size + 1)
        hits = np.bincount(bins, weights=positive, minlength=edges.size + 1)
        return {"edges": edges, "values": hits / counts}

    def _predict_binary(self, p: np.ndarray, piece: dict[str, Any]) -> np.ndarray:
        return piece["values"][np.searchsorted(piece["edges"], p, side="right")]
