"""Temperature scaling (Guo et al. 2017): one scalar shared by all labels.

``q = softmax(log p / T)``. T > 1 softens an over-confident model, T < 1 sharpens an
under-confident one. It never changes the ranking of labels within an item, so the argmax
(and accuracy) stays the same; natively multiclass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from howsure.calibration.base import Calibrator, safe_log

# The fitted inverse temperature 1/T is searched in this range; the NLL is convex in 1/T, so a
# bounded scalar search finds the optimum whenever it lies inside.
INVERSE_TEMPERATURE_BOUNDS = (1e-3, 1e3)


def temperature_nll(inverse_temperature: float, log_probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of ``softmax(log_probs * inverse_temperature)``.

    Parameters
    ----------
    inverse_temperature : float
        1 / T.
    log_probs : ndarray of shape (n, K)
    labels : ndarray of shape (n,), int class indices

    Returns
    -------
    float
    """
    scaled = log_softmax(log_probs * inverse_temperature, axis=1)
    return float(-scaled[np.arange(labels.size), labels].mean())


class TemperatureScaling(Calibrator):
    """Divide label log-probabilities by one fitted temperature T, then renormalise.

    Fitted attributes
    -----------------
    temperature_ : float
        T; > 1 means the raw scores were over-confident.
    """

    name = "temperature"

    def _fit(self, probs: np.ndarray, labels: np.ndarray) -> None:
        log_probs = safe_log(probs)
        result = minimize_scalar(
            temperature_nll,
            bounds=INVERSE_TEMPERATURE_BOUNDS,
            args=(log_probs, labels),
            method="bounded",
            options={"xatol": 1e-8},
        )
        self.temperature_ = float(1.0 / result.x)

    def _predict(self, probs: np.ndarray) -> np.ndarray:
        return np.exp(log_softmax(safe_log(probs) / self.temperature_, axis=1))

    def _get_state(self) -> dict[str, Any]:
        return {"temperature": self.temperature_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.temperature_ = float(state["temperature"])
