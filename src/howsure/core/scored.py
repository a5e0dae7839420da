"""ScoredItems: the one record of scored items every reader of scores returns and every consumer
(evaluation, certification, routing) takes. numpy only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from howsure.core.validation import check_distribution


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
