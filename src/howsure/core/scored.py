"""ScoredItems: the one record of scored items every reader of scores returns and every consumer
(evaluation, certification, routing) takes. numpy only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from howsure.core.validation import check_distribution
from howsure.errors import DataError


@dataclass
class ScoredItems:
    """Scored items in the top-label view and, where known, in full.

    Attributes
    ----------
    correct : ndarray of shape (n,), 0.0/1.0, or None
        Whether the given prediction was right; None when the input has no truth (routing).
    confidence : ndarray of shape (n,)
        Probability of the given prediction.
    probabilities : ndarray of shape (n, K) or None
        Full label distribution, columns in ``label_names`` order.
    labels : ndarray of shape (n,), int, or None
        Gold label index into ``label_names``.
    label_names : list of str or None
    texts : list of str or None
        Used to keep exact duplicates on one side of every split.
    ids : list of str
        Real ids when ``source["columns"]`` names an id column, else row numbers.
    source : dict
        Path, kind of input and the columns read, for the report.
    predicted : list of str or None
        Name of each item's predicted label, when the reader knows it.
    records : list of dict or None
        The input records as read, when the reader keeps them (to write them back, routed).
    """

    correct: np.ndarray | None
    confidence: np.ndarray
    probabilities: np.ndarray | None = None
    labels: np.ndarray | None = None
    label_names: list[str] | None = None
    texts: list[str] | None = None
    ids: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)
    predicted: list[str] | None = None
    records: list[dict[str, Any]] | None = None

    @property
    def n_items(self) -> int:
        return int(self.confidence.size)

    @property
    def has_distribution(self) -> bool:
        return self.probabilities is not None and self.labels is not None

    @property
    def real_ids(self) -> list[str] | None:
        """The ids when they come from an id column (they may fingerprint a calibrator), else
        None: row numbers identify nothing outside this file."""
        return self.ids if self.source.get("columns", {}).get("id") else None


def top_label(probabilities, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduce a label distribution to the top-label view.

    Parameters
    ----------
    probabilities : array-like of shape (n, K)
    labels : array-like of shape (n,)
        Gold label indices.

    Returns
    -------
    correct : ndarray of shape (n,), 0.0/1.0
    confidence : ndarray of shape (n,)
        Largest probability of each row.
    prediction : ndarray of shape (n,), int64
        Index of that probability (the first one on ties, as ``argmax``).
    """
    probabilities, labels = check_distribution(probabilities, labels)
    prediction = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(prediction)), prediction]
    return (prediction == labels).astype(float), confidence, prediction


def conservative_rows(probabilities, bounds) -> np.ndarray:
    """The label distributions calibration and certification use when each label's mass is
    known only as an interval (a server's top-k log-probabilities, `LabelScores.label_mass_bounds`).

    Each row keeps its predicted label (the argmax of ``probabilities``, the point estimate) and
    takes the worst case the intervals allow for it: the predicted label at its lower mass, every
    other label at its upper mass, normalised::

        p'(pred) = lower(pred) / (lower(pred) + sum_{j != pred} upper(j))
        p'(j)    = upper(j)    / (lower(pred) + sum_{j != pred} upper(j))

    so the predicted label's probability is never above what the server's answer supports. A
    row whose masses are all zero keeps its point estimate (nothing was seen to be pessimistic
    about). Where the intervals overlap, another label may come out ahead in the returned row:
    the server's answer did not settle which label is first.

    Parameters
    ----------
    probabilities : array-like, shape (n, K)
        Point-estimate label distributions (rows sum to 1).
    bounds : array-like, shape (n, K, 2)
        Lower and upper label masses.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    bounds = np.asarray(bounds, dtype=np.float64)
    if bounds.shape != probabilities.shape + (2,):
        raise DataError(f"label mass bounds have shape {bounds.shape}, expected {probabilities.shape + (2,)} "
                        "(a [lower, upper] pair per label)")
    if not np.all(np.isfinite(bounds)) or np.any(bounds[..., 0] > bounds[..., 1] + 1e-9) or np.any(bounds < 0):
        raise DataError("label mass bounds must be finite pairs 0 <= lower <= upper")
    rows = np.arange(len(probabilities))
    predicted = probabilities.argmax(axis=1)
    worst = bounds[..., 1].copy()
    worst[rows, predicted] = bounds[rows, predicted, 0]
    total = worst.sum(axis=1, keepdims=True)
    return np.where(total > 0, worst / np.where(total > 0, total, 1.0), probabilities)
