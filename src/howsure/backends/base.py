"""The Backend protocol: the one thing every model backend must do.

A backend scores a batch of texts against a task's labels by reading the model's next-token
distribution at the answer position. Everything downstream (calibration, decisions, the review
service) sees only `LabelScores`, so a backend can be a local transformers model, an
OpenAI-compatible server with logprobs, llama.cpp or vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from howsure.task import Task

ProgressCallback = Callable[[int], None]
"""Called with the number of texts just finished, so callers can drive a progress bar."""


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
    """

    labels: list[str]
    probabilities: np.ndarray
    label_mass: np.ndarray
    other_mass: float
    top_tokens: list[tuple[str, float]] = field(default_factory=list)
    variants: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

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
        return {
            "prediction": self.prediction,
            "confidence": round(self.confidence, 8),
            "probabilities": {k: round(float(v), 8) for k, v in zip(self.labels, self.probabilities)},
            "label_mass": {k: round(float(v), 8) for k, v in zip(self.labels, self.label_mass)},
            "other_mass": round(float(self.other_mass), 8),
            "top_tokens": [[t, round(float(p), 8)] for t, p in self.top_tokens],
        }


@runtime_checkable
class Backend(Protocol):
    """A model that can score texts against a task's labels.

    Implementations live one per file in ``howsure/backends/`` and are chosen by name through
    `howsure.backends.load_backend`, so heavy imports (torch, vLLM) load only when chosen.
    """

    #: identifies the model for caches, outputs and policies (preset name, path or hub id).
    model_id: str

    def label_scores(
        self,
        task: Task,
        texts: Sequence[str],
        *,
        top_k: int = 10,
        details: bool = False,
        progress: ProgressCallback | None = None,
    ) -> list[LabelScores]:
        """Score each text against ``task``'s labels, one `LabelScores` per text, in order.

        Parameters
        ----------
        task : Task
            The prompt and labels.
        texts : sequence of str, length n
            The texts to classify; batching and prefix sharing are the backend's business.
        top_k : int
            How many most-probable next tokens to report per text.
        details : bool
            Also fill `LabelScores.variants` (the tokens counted for each label).
        progress : callable, optional
            Called with the number of texts finished after each internal batch.
        """
        ...
