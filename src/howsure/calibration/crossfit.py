"""Cross-fitting: every item calibrated by a calibrator fitted on the other folds.

The folds come from `howsure.stats.splits` (statistics below the calibrators); fitting a calibrator
per fold is the calibrators' own business, so it lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from howsure.calibration.base import Calibrator
from howsure.calibration.registry import calibrator_from_dict
from howsure.core.validation import check_fit_inputs
from howsure.errors import CalibrationError
from howsure.stats.splits import SplitScheme, crossfit_folds


def _calibrator_factory(make_calibrator_fn: Callable[[], Calibrator] | Calibrator) -> Callable[[], Calibrator]:
    if isinstance(make_calibrator_fn, Calibrator):
        # A calibrator passed as a template: each fold gets an unfitted copy of it, without the
        # template's record of fitting items (the copy is fitted on the fold's own).
        blueprint = {**make_calibrator_fn.to_dict(), "state": None, "fit_items": None}
        return lambda: calibrator_from_dict(blueprint)
    if not callable(make_calibrator_fn):
        raise CalibrationError(
            f"make_calibrator_fn must be a callable returning a fresh calibrator (or a calibrator "
            f"to copy), got {type(make_calibrator_fn).__name__}"
        )
    return make_calibrator_fn


def crossfit_predict(
    make_calibrator_fn: Callable[[], Calibrator] | Calibrator,
    scores: Any,
    y: Any,
    *,
    n_folds: int = 5,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
    return_scheme: bool = False,
) -> np.ndarray | tuple[np.ndarray, SplitScheme]:
    """Out-of-fold calibrated probabilities: each item scored by a calibrator that never saw it.

    Parameters
    ----------
    make_calibrator_fn : callable () -> Calibrator, or an unfitted Calibrator to copy
        Called once per fold for a fresh calibrator, e.g.
        ``lambda: make_calibrator("isotonic", mode="confidence")``.
    scores : array-like
        (n, K) label probabilities or (n,) confidences, matching the calibrator's mode.
    y : array-like of shape (n,)
    n_folds, seed, groups
        As in :func:`crossfit_folds`.
    return_scheme : bool
        Also return the :class:`SplitScheme` for the report.

    Returns
    -------
    predictions : ndarray
        Same shape as ``predict_proba(scores)``: (n, K) or (n,).
    scheme : SplitScheme
        Only when ``return_scheme`` is true.
    """
    factory = _calibrator_factory(make_calibrator_fn)
    mode = factory().mode
    probs, labels = check_fit_inputs(scores, y, mode)
    folds, scheme = crossfit_folds(labels, n_folds=n_folds, seed=seed, groups=groups)
    raw = probs[:, 1] if mode == "confidence" else probs
    predictions = np.full(raw.shape, np.nan)
    for fit_idx, held_out_idx in folds:
        calibrator = factory().fit(raw[fit_idx], labels[fit_idx])
        predictions[held_out_idx] = calibrator.predict_proba(raw[held_out_idx])
    return (predictions, scheme) if return_scheme else predictions
