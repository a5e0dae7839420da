"""Calibrators: turn raw label probabilities into probabilities that mean what they say.

    from howsure.calibration import make_calibrator, save_calibrator, load_calibrator
    cal = make_calibrator("isotonic", mode="distribution").fit(scores, y)
    calibrated = cal.predict_proba(new_scores)
    save_calibrator(cal, "calibrator.json")

See ``docs/calibration.md`` for what each calibrator is for and the two modes.
"""

from __future__ import annotations

from howsure.calibration.auto import AutoCalibrator
from howsure.calibration.base import Calibrator
from howsure.core.validation import MODES
from howsure.calibration.beta import BetaCalibrator
from howsure.calibration.crossfit import crossfit_predict
from howsure.calibration.fitting import overlap_with_fit_items
from howsure.calibration.histogram import HistogramBinning
from howsure.calibration.isotonic import IsotonicCalibrator
from howsure.calibration.platt import PlattScaling
from howsure.calibration.registry import (
    CALIBRATOR_NAMES,
    CALIBRATORS,
    calibrator_class,
    calibrator_from_dict,
    fit_calibrator,
    load_calibrator,
    make_calibrator,
    save_calibrator,
)
from howsure.calibration.temperature import TemperatureScaling
from howsure.calibration.venn_abers import VennAbers

__all__ = [
    "CALIBRATOR_NAMES",
    "CALIBRATORS",
    "Calibrator",
    "MODES",
    "calibrator_class",
    "calibrator_from_dict",
    "crossfit_predict",
    "fit_calibrator",
    "load_calibrator",
    "make_calibrator",
    "overlap_with_fit_items",
    "save_calibrator",
]
