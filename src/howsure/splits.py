"""Moved to `howsure.stats.splits` (cross-fitted predictions: `howsure.calibration.crossfit_predict`);
this path stays importable for existing code."""

from howsure.stats.splits import (
    CalibrationTestSplit,
    SplitScheme,
    _stratified_folds,
    calibration_test_split,
    crossfit_folds,
)

__all__ = ["CalibrationTestSplit", "SplitScheme", "_stratified_folds", "calibration_test_split", "crossfit_folds"]
