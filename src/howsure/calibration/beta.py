"""Beta calibration (Kull, Silva Filho and Flach, AISTATS 2017).

``q = sigmoid(a * ln p - b * ln(1 - p) + c)`` with a, b >= 0. Three parameters, so nearly as
data-frugal as Platt, but the family contains the identity map and can bend scores differently
near 0 and near 1 (Platt's sigmoid-of-logit is the special case a = b).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from howsure.calibration.base import OneVsRestCalibrator, fit_logistic_soft, platt_targets, safe_log


def _beta_features(p: np.ndarray) -> np.ndarray:
    """(n,) scores -> (n, 2) features ``[ln p, -ln(1 - p)]``."""
    return np.column_stack([safe_log(p), -safe_log(1.0 - p)])


class BetaCalibrator(OneVsRestCalibrator):
    """Three-parameter beta calibration, one per label (one-vs-rest).

    Fitted by scikit-learn's unregularised ``LogisticRegression`` on ``[ln p, -ln(1 - p)]``; as
    in the authors' ``betacal`` package, a negative coefficient (which would make the map
    non-monotone) is fixed at 0 and the other refitted. Targets are smoothed as in Platt
    scaling (:func:`platt_targets`) so separable calibration data still give finite values.

    Fitted attributes
    -----------------
    pieces_ : list of dict
        ``{"a": a, "b": b, "c": c}`` per piece.
    """

    name = "beta"

    def _fit_binary(self, p: np.ndarray, positive: np.ndarray) -> dict[str, Any]:
        features = _beta_features(p)
        targets = platt_targets(positive)
        (a, b), intercept = fit_logistic_soft(features, targets)
        if a < 0 or b < 0:
            keep = 1 if a < 0 else 0
            coef, intercept = fit_logistic_soft(features[:, [keep]], targets)
            slope = max(float(coef[0]), 0.0)
            a, b = (0.0, slope) if keep == 1 else (slope, 0.0)
        return {"a": float(a), "b": float(b), "c": float(intercept)}

    def _predict_binary(self, p: np.ndarray, piece: dict[str, Any]) -> np.ndarray:
        features = _beta_features(p)
        return expit(piece["a"] * features[:, 0] + piece["b"] * features[:, 1] + piece["c"])
