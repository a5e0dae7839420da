"""Platt scaling (sigmoid): logistic regression on the logit of the score.

``q = sigmoid(a * logit(p) + b)``. Two parameters, so it needs little data and cannot
overfit much, but it can only bend scores along a sigmoid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from howsure.calibration.base import OneVsRestCalibrator, fit_logistic_soft, platt_targets, safe_logit


class PlattScaling(OneVsRestCalibrator):
    """Sigmoid of an affine function of ``logit(score)``, one per label (one-vs-rest).

    Fitted, as in Platt (1999), to smoothed targets (see :func:`platt_targets`) by
    scikit-learn's ``LogisticRegression``, so perfectly separable calibration data still give
    finite parameters.

    Parameters
    ----------
    mode : {"distribution", "confidence"}
    C : float or None
        Inverse L2 regularisation strength of scikit-learn's ``LogisticRegression``; the default
        ``None`` is the unregularised fit of the original method.

    Fitted attributes
    -----------------
    pieces_ : list of dict
        ``{"slope": a, "intercept": b}`` per piece (one for binary, K for multiclass).
    """

    name = "platt"
    param_names = ("C",)

    def __init__(self, mode: str = "distribution", C: float | None = None) -> None:
        super().__init__(mode)
        self.C = C

    def _fit_binary(self, p: np.ndarray, positive: np.ndarray) -> dict[str, Any]:
        coef, intercept = fit_logistic_soft(safe_logit(p)[:, None], platt_targets(positive), self.C)
        return {"slope": float(coef[0]), "intercept": intercept}

    def _predict_binary(self, p: np.ndarray, piece: dict[str, Any]) -> np.ndarray:
        return expit(piece["slope"] * safe_logit(p) + piece["intercept"])
