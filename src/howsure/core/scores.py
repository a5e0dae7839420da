"""LabelScores: what a backend said about one text, the record every later layer reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LabelScores:
    """What the model said about one text.

    Attributes
    ----------
    labels : list[str]
        Label names, in the task's order; every array below follows it.
    probabilities : ndarray, shape (n_labels,)
        Label masses normalised over the labels: the raw (uncalibrated) label distribution.
        Sums to 1.
    label_mass : ndarray, shape (n_labels,)
        Raw, unnormalised probability of each label: the total probability of all its token
        variants (multi-token verbalizers by the chain rule).
    other_mass : float
        ``1 - label_mass.sum()``: probability the model puts on answers that are no label. A large
        value means the prompt is not working.
    top_tokens : list[tuple[str, float]]
        The most probable next tokens (decoded) with their probabilities, most probable first.
    variants : dict[str, list[tuple[str, float]]]
        Per label, each token (or token sequence) counted for it and its probability; filled
        when the caller asked for details (``inspect``), else empty.
    label_mass_bounds : ndarray, shape (n_labels, 2), or None
        Where the backend saw only part of the distribution (a server's top k log-probabilities):
        each label's mass lies in ``[lower, upper]``; ``label_mass`` is the lower end (the mass
        seen). None when the backend read the whole distribution. See `conservative_rows`.
    """

    labels: list[str]
    probabilities: np.ndarray
    label_mass: np.ndarray
    other_mass: float
    top_tokens: list[tuple[str, float]] = field(default_factory=list)
    variants: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    label_mass_bounds: np.ndarray | None = None

    @property
    def prediction(self) -> str:
        """The label with the highest probability (first in task order on ties)."""
        return self.labels[int(np.argmax(self.probabilities))]

    @property
    def confidence(self) -> float:
        """Raw probability of the predicted label."""
        return float(np.max(self.probabilities))

    def to_record(self) -> dict:
        """JSON-ready form, as written by ``howsure score``."""
        record = {
            "prediction": self.prediction,
            "confidence": round(self.confidence, 8),
            "probabilities": {k: round(float(v), 8) for k, v in zip(self.labels, self.probabilities)},
            "label_mass": {k: round(float(v), 8) for k, v in zip(self.labels, self.label_mass)},
            "other_mass": round(float(self.other_mass), 8),
            "top_tokens": [[t, round(float(p), 8)] for t, p in self.top_tokens],
        }
        if self.label_mass_bounds is not None:
            record["label_mass_bounds"] = {k: [round(float(lo), 8), round(float(hi), 8)]
                                           for k, (lo, hi) in zip(self.labels, self.label_mass_bounds)}
        return record
