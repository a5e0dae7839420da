"""Moved to `howsure.decisions.recalibration`; this name stays importable."""

from howsure.decisions.recalibration import (  # noqa: F401
    DEFAULT_TEST_SIZE,
    RAW_ECE_WARNING,
    SplitCertification,
    certify_on_parts,
    certify_with_split,
    check_calibrator_overlap,
    raw_calibration_note,
)

__all__ = [
    "DEFAULT_TEST_SIZE",
    "RAW_ECE_WARNING",
    "SplitCertification",
    "certify_on_parts",
    "certify_with_split",
    "check_calibrator_overlap",
    "raw_calibration_note",
]
