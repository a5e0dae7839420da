"""Moved to `howsure.stats.metrics` (with `howsure.stats.binning`, `howsure.stats.reliability`
and the validators in `howsure.core.validation`); this path stays importable for existing code.
Patch module attributes such as ``_MAX_CELLS`` on `howsure.stats.metrics`."""

from howsure.stats.metrics import (
    EPS,
    METRICS,
    RECENTRED,
    ROW_SUM_TOLERANCE,
    STRATEGIES,
    STRATEGY_NAMES,
    MetricInfo,
    ReliabilityCurve,
    accuracy,
    aurc,
    auroc,
    bootstrap_indices,
    brier_score,
    check_distribution,
    check_top_label,
    expected_calibration_error,
    maximum_calibration_error,
    multiclass_brier_score,
    multiclass_log_loss,
    negative_log_likelihood,
    reliability_curve,
    rms_calibration_error,
    summarize,
    top_label,
)

__all__ = [
    "EPS", "METRICS", "RECENTRED", "ROW_SUM_TOLERANCE", "STRATEGIES", "STRATEGY_NAMES", "MetricInfo",
    "ReliabilityCurve", "accuracy", "aurc", "auroc", "bootstrap_indices", "brier_score",
    "check_distribution", "check_top_label", "expected_calibration_error",
    "maximum_calibration_error", "multiclass_brier_score", "multiclass_log_loss",
    "negative_log_likelihood", "reliability_curve", "rms_calibration_error", "summarize", "top_label",
]
