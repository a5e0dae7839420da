"""Calibrators: turn raw label probabilities into probabilities that mean what they say.

    from howsure.calibration import make_calibrator, save_calibrator, load_calibrator
    cal = make_calibrator("isotonic", mode="distribution").fit(scores, y)
    calibrated = cal.predict_proba(new_scores)
    save_calibrator(cal, "calibrator.json")

See ``docs/calibration.md`` for what each calibrator is for and the two modes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from howsure.calibration.auto import AutoCalibrator
from howsure.calibration.base import FORMAT_NAME, FORMAT_VERSION, MODES, Calibrator
from howsure.calibration.beta import BetaCalibrator
from howsure.calibration.fitting import check_fit_fingerprint, fit_calibrator, overlap_with_fit_items
from howsure.calibration.histogram import HistogramBinning
from howsure.calibration.isotonic import IsotonicCalibrator
from howsure.calibration.platt import PlattScaling
from howsure.calibration.temperature import TemperatureScaling
from howsure.calibration.venn_abers import VennAbers
from howsure.errors import CalibrationError

CALIBRATORS: dict[str, type[Calibrator]] = {
    cls.name: cls
    for cls in (
        TemperatureScaling,
        PlattScaling,
        IsotonicCalibrator,
        BetaCalibrator,
        HistogramBinning,
        VennAbers,
        AutoCalibrator,
    )
}
CALIBRATOR_NAMES: tuple[str, ...] = tuple(CALIBRATORS)


def _calibrator_class(name: str) -> type[Calibrator]:
    try:
        return CALIBRATORS[name]
    except (KeyError, TypeError):
        raise CalibrationError(
            f"unknown calibrator {name!r}; expected one of {list(CALIBRATOR_NAMES)}"
        ) from None


def make_calibrator(name: str, mode: str = "distribution", **params: Any) -> Calibrator:
    """Build an unfitted calibrator by name.

    Parameters
    ----------
    name : str
        One of :data:`CALIBRATOR_NAMES`.
    mode : {"distribution", "confidence"}
        ``"distribution"``: fit (n, K) label probabilities against class indices;
        ``"confidence"``: fit (n,) top-label confidences against 0/1 correctness.
    **params
        The calibrator's own parameters (e.g. ``n_bins`` for ``"histogram"``).
    """
    cls = _calibrator_class(name)
    unknown = sorted(set(params) - set(cls.param_names))
    if unknown:
        raise CalibrationError(
            f"calibrator {name!r} has no parameter(s) {unknown}; "
            f"its parameters are {list(cls.param_names)}"
        )
    return cls(mode=mode, **params)


def calibrator_from_dict(data: dict[str, Any]) -> Calibrator:
    """Rebuild a calibrator (fitted or not) from :meth:`Calibrator.to_dict` output."""
    if not isinstance(data, dict):
        raise CalibrationError(f"a saved calibrator must be a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT_NAME:
        raise CalibrationError(
            f"not a saved calibrator: format is {data.get('format')!r}, expected {FORMAT_NAME!r}"
        )
    if data.get("version") != FORMAT_VERSION:
        raise CalibrationError(
            f"saved calibrator has format version {data.get('version')!r}; "
            f"this howsure reads version {FORMAT_VERSION}"
        )
    mode = data.get("mode")
    if mode not in MODES:
        raise CalibrationError(f"saved calibrator has mode {mode!r}; expected one of {list(MODES)}")
    calibrator = make_calibrator(data.get("name"), mode=mode, **(data.get("params") or {}))
    if data.get("state") is not None:
        calibrator.load_state(data["state"])
    calibrator.fit_items = check_fit_fingerprint(data.get("fit_items"))
    return calibrator


def save_calibrator(calibrator: Calibrator, path: str | Path) -> Path:
    """Write ``calibrator.to_dict()`` as JSON to ``path`` and return the path."""
    path = Path(path)
    path.write_text(json.dumps(calibrator.to_dict(), indent=1, allow_nan=False) + "\n")
    return path


def load_calibrator(path: str | Path) -> Calibrator:
    """Read a calibrator written by :func:`save_calibrator`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"calibrator file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"calibrator file {str(path)!r} is not valid JSON: {exc}") from exc
    return calibrator_from_dict(data)


__all__ = [
    "CALIBRATOR_NAMES",
    "CALIBRATORS",
    "Calibrator",
    "MODES",
    "calibrator_from_dict",
    "fit_calibrator",
    "load_calibrator",
    "make_calibrator",
    "overlap_with_fit_items",
    "save_calibrator",
]
