"""Calibrators by name: build, rebuild from JSON, save, load, and fit one by name.

Everything that makes a calibrator from a name goes through here, so the calibrators that
build others (`auto`) and the code that fits them (`crossfit`) import one small module.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from howsure.calibration.base import Calibrator, FORMAT_NAME, FORMAT_VERSION
from howsure.calibration.fitting import check_fit_fingerprint, fit_fingerprint
from howsure.core.validation import MODES
from howsure.errors import CalibrationError

CALIBRATORS: dict[str, str] = {
    "temperature": "howsure.calibration.temperature:TemperatureScaling",
    "platt": "howsure.calibration.platt:PlattScaling",
    "isotonic": "howsure.calibration.isotonic:IsotonicCalibrator",
    "beta": "howsure.calibration.beta:BetaCalibrator",
    "histogram": "howsure.calibration.histogram:HistogramBinning",
    "venn_abers": "howsure.calibration.venn_abers:VennAbers",
    "auto": "howsure.calibration.auto:AutoCalibrator",
}
"""Every calibrator by name, as ``"module:Class"``: a module is imported when its calibrator is
first asked for (as `howsure.backends.BACKENDS` does), so `auto`, which builds the others by
name, can import this registry without the registry importing it."""
CALIBRATOR_NAMES: tuple[str, ...] = tuple(CALIBRATORS)


def calibrator_class(name: str) -> type[Calibrator]:
    """The class registered as ``name``."""
    try:
        module_name, class_name = CALIBRATORS[name].split(":")
    except (KeyError, TypeError):
        raise CalibrationError(
            f"unknown calibrator {name!r}; expected one of {list(CALIBRATOR_NAMES)}"
        ) from None
    return getattr(importlib.import_module(module_name), class_name)


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
    cls = calibrator_class(name)
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


def fit_calibrator(name: str, scores: Any, labels: Any, *, mode: str = "distribution", seed: int = 0,
                   groups: Sequence[Hashable] | None = None, texts: Sequence[str] | None = None,
                   ids: Sequence[Hashable] | None = None) -> Any:
    """A calibrator ``name`` fitted on ``scores`` / ``labels``, fingerprinted by ``texts`` or ``ids``.

    ``auto`` chooses by cross-validated log loss with ``seed`` for its folds and keeps
    ``groups`` (default: the texts) in one fold each, so duplicate texts cannot flatter a
    memoriser. ``"none"`` returns None.
    """
    if name == "none":
        return None
    if np.asarray(labels).size == 0:
        raise CalibrationError(f"no items are left to fit the {name!r} calibrator on")
    groups = texts if groups is None else groups
    if name == "auto":
        calibrator = make_calibrator("auto", mode=mode, seed=seed).fit(scores, labels, groups=groups)
    else:
        calibrator = make_calibrator(name, mode=mode).fit(scores, labels)
    calibrator.fit_items = fit_fingerprint(texts, ids)
    return calibrator
