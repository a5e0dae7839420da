"""Isotonic regression: the best non-decreasing step-and-ramp map from score to frequency.

Makes no shape assumption, so it fixes any monotone miscalibration, but it needs a few
hundred labelled items per label to avoid fitting noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

from howsure.calibration.base import OneVsRestCalibrator


class IsotonicCalibrator(OneVsRestCalibrator):
    """Non-decreasing piecewise-linear map fitted by scikit-learn's ``IsotonicRegression``.

    Scores outside the calibration range are clipped to its ends.

    Fitted attributes
    -----------------
    pieces_ : list of dict
        ``{"x": thresholds, "y": values}`` per piece: the knots scikit-learn keeps, between
        which it interpolates linearly (exactly what ``np.interp`` does).
    """

    name = "isotonic"

    def _fit_binary(self, p: np.ndarray, positive: np.ndarray) -> dict[str, Any]:
        model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        model.fit(p, positive.astype(np.float64))
        return {"x": model.X_thresholds_, "y": model.y_thresholds_}

    def _predict_binary(self, p: np.ndarray, piece: dict[str, Any]) -> np.ndarray:
        # np.interp clips outside [x[0], x[-1]] like out_of_bounds="clip", and predicts from
        # the stored knots alone, which is what makes a reloaded calibrator bitwise equal.
        return np.interp(p, piece["x"], piece["y"])
