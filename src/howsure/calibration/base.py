"""Shared machinery of every calibrator: input checks, the two modes, one-vs-rest, JSON state.

Two modes
---------
``mode="distribution"``
    ``scores`` is an (n, K) array of label probabilities (rows sum to 1, K >= 2) and ``y`` the
    (n,) true class indices in ``[0, K)``. ``predict_proba`` returns an (n, K) array whose rows
    sum to 1. The predicted label (the argmax) may change: that is how a model biased towards
    one label gets its accuracy back.
``mode="confidence"``
    ``scores`` is the (n,) confidence of the predicted label in ``[0, 1]`` and ``y`` the (n,)
    0/1 correctness of that label. ``predict_proba`` returns the (n,) calibrated confidence;
    the label itself is never touched.

Internally a confidence problem is the binary distribution problem ``[1 - c, c]`` with the
correctness as the class, so every calibrator implements the distribution case only.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import numpy as np
from scipy.linalg import LinAlgWarning

from howsure.errors import CalibrationError, NotFittedError

MODES = ("distribution", "confidence")

# A row of label probabilities is accepted when it sums to 1 within this tolerance: scores
# come from float32 softmaxes and from CSV files with a few printed digits.
ROW_SUM_TOLERANCE = 1e-4

# Probabilities are clipped this far from 0 and 1 before taking logs, so that a label the
# model gave exactly zero mass costs a large but finite loss instead of an infinite one.
LOG_CLIP = 1e-12

FORMAT_NAME = "howsure.calibrator"
FORMAT_VERSION = 1


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`MODES`, else raise :class:`CalibrationError`."""
    if mode not in MODES:
        raise CalibrationError(f"unknown calibration mode {mode!r}; expected one of {list(MODES)}")
    return mode


def _as_float_array(values: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{what} must be numeric, got {type(values).__name__}: {exc}") from exc
    return array


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_scores(scores: Any, mode: str, n_classes: int | None = None) -> np.ndarray:
    """Validate scores for ``mode`` and return them as an (n, K) probability array.

    Parameters
    ----------
    scores : array-like
        (n, K) label probabilities for ``mode="distribution"``, (n,) confidences for
        ``mode="confidence"``.
    mode : {"distribution", "confidence"}
    n_classes : int, optional
        K the calibrator was fitted with; a different K is an error.

    Returns
    -------
    probs : ndarray of shape (n, K)
        For confidence mode K = 2 and ``probs[:, 1]`` is the confidence.

    Raises
    ------
    CalibrationError
        Empty input, wrong shape, NaN or infinity, values outside [0, 1], rows not summing to 1,
        K different from the fitted one.
    """
    check_mode(mode)
    array = _as_float_array(scores, "scores")
    if mode == "confidence":
        if array.ndim != 1:
            raise CalibrationError(
                f"mode='confidence' expects scores of shape (n,) (the predicted label's confidence), "
                f"got shape {array.shape}; use mode='distribution' for (n, K) label probabilities"
            )
    elif array.ndim != 2 or array.shape[1] < 2:
        raise CalibrationError(
            f"mode='distribution' expects scores of shape (n, K) with K >= 2 label probabilities, "
            f"got shape {array.shape}; use mode='confidence' for (n,) confidences"
        )
    if array.shape[0] == 0:
        raise CalibrationError("scores is empty; expected at least one item")
    if np.isnan(array).any():
        raise CalibrationError(f"scores contain NaN (first at index {_first_bad(np.isnan(array))})")
    outside = (array < 0.0) | (array > 1.0)
    if outside.any():
        where = _first_bad(outside)
        raise CalibrationError(
            f"scores must be probabilities in [0, 1]; got {float(array[where])!r} at index {where}"
        )
    if mode == "confidence":
        return np.column_stack([1.0 - array, array])
    row_sums = array.sum(axis=1)
    off = np.abs(row_sums - 1.0) > ROW_SUM_TOLERANCE
    if off.any():
        row = int(np.argmax(off))
        raise CalibrationError(
            f"each row of scores must sum to 1 (tolerance {ROW_SUM_TOLERANCE}); "
            f"row {row} sums to {float(row_sums[row])!r}"
        )
    if n_classes is not None and array.shape[1] != n_classes:
        raise CalibrationError(
            f"calibrator was fitted on {n_classes} labels but scores have {array.shape[1]} columns"
        )
    # Renormalise away the tolerated rounding so downstream code sees exact distributions.
    return array / row_sums[:, None]


def check_labels(y: Any, n_items: int, n_classes: int, mode: str) -> np.ndarray:
    """Validate targets and return them as an (n,) int array of class indices.

    Parameters
    ----------
    y : array-like of shape (n,)
        Class indices in ``[0, n_classes)`` (distribution mode) or 0/1 correctness
        (confidence mode; booleans accepted).
    n_items : int
        n, the number of score rows, which ``y`` must match.
    n_classes : int
        K.
    mode : {"distribution", "confidence"}
    """
    array = np.asarray(y)
    if array.ndim != 1:
        raise CalibrationError(f"y must have shape (n,), got shape {array.shape}")
    if array.shape[0] != n_items:
        raise CalibrationError(
            f"mismatched lengths: scores has {n_items} items but y has {array.shape[0]}"
        )
    if array.dtype == bool:
        array = array.astype(np.int64)
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise CalibrationError(f"y contains NaN (first at index {int(np.argmax(np.isnan(array)))})")
        if not np.all(array == np.round(array)):
            bad = float(array[array != np.round(array)][0])
            raise CalibrationError(f"y must hold integer class indices, got {bad!r}")
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise CalibrationError(f"y must hold integer class indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    out_of_range = (array < 0) | (array >= n_classes)
    if out_of_range.any():
        bad = int(array[out_of_range][0])
        expected = "0/1 correctness" if mode == "confidence" else f"class indices in [0, {n_classes})"
        raise CalibrationError(f"y value {bad} is out of range; expected {expected}")
    return array


def check_fit_inputs(scores: Any, y: Any, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a fitting set: scores as in :func:`check_scores`, ``y`` as in :func:`check_labels`.

    Also rejects a set in which only one class occurs, since no calibrator can learn how
    often a score is right from items that are all right (or all of one label).

    Returns
    -------
    probs : ndarray of shape (n, K)
    labels : ndarray of shape (n,), int
    """
    probs = check_scores(scores, mode)
    labels = check_labels(y, probs.shape[0], probs.shape[1], mode)
    present = np.unique(labels)
    if present.size < 2:
        what = "correctness" if mode == "confidence" else "class"
        raise CalibrationError(
            f"y holds one class only ({what} {int(present[0])} for all {labels.size} items); "
            f"calibration needs at least two"
        )
    return probs, labels


def safe_log(probs: np.ndarray) -> np.ndarray:
    """Natural log of probabilities clipped to ``[LOG_CLIP, 1]``; same shape as ``probs``."""
    return np.log(np.clip(probs, LOG_CLIP, 1.0))


def safe_logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` with p clipped to ``[LOG_CLIP, 1 - LOG_CLIP]``; shape of ``p``."""
    clipped = np.clip(p, LOG_CLIP, 1.0 - LOG_CLIP)
    return np.log(clipped) - np.log1p(-clipped)


def _to_json_value(value: Any) -> Any:
    """Turn fitted state into JSON types. Python's float repr round-trips exactly."""
    if isinstance(value, np.ndarray):
        return [_to_json_value(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json_value(v) for k, v in value.items()}
    if isinstance(value, (np.floating, float)):
        number = float(value)
        if not math.isfinite(number):
            raise CalibrationError(f"fitted state holds a non-finite number {number!r}")
        return number
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


class Calibrator:
    """Base class: scikit-learn style, ``fit(scores, y) -> self`` then ``predict_proba(scores)``.

    Subclasses set :attr:`name`, list their constructor parameters in :attr:`param_names`,
    and implement ``_fit(probs, labels)``, ``_predict(probs)`` (both on (n, K) distributions),
    ``_get_state()`` and ``_set_state(state)``. ``_predict`` must compute only from what
    ``_get_state`` returns, so a saved and reloaded calibrator predicts bit for bit the same.
    """

    name: ClassVar[str] = ""
    param_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, mode: str = "distribution") -> None:
        self.mode = check_mode(mode)
        # Fingerprint of the fitting items, set by howsure.calibration.fitting.fit_calibrator.
        self.fit_items: dict[str, Any] | None = None

    # -- parameters -------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Constructor parameters other than ``mode``, as a dict."""
        return {name: getattr(self, name) for name in self.param_names}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in {"mode": self.mode, **self.get_params()}.items())
        return f"{type(self).__name__}({params})"

    # -- fitting ----------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "n_classes_")

    def fit(self, scores: Any, y: Any) -> "Calibrator":
        """Fit on calibration data.

        Parameters
        ----------
        scores : array-like, (n, K) label probabilities or (n,) confidences (see ``mode``)
        y : array-like of shape (n,), class indices or 0/1 correctness

        Returns
        -------
        self
        """
        probs, labels = check_fit_inputs(scores, y, self.mode)
        self._fit(probs, labels)
        self.n_classes_ = probs.shape[1]
        return self

    def predict_proba(self, scores: Any) -> np.ndarray:
        """Calibrated probabilities.

        Parameters
        ----------
        scores : array-like, (n, K) label probabilities or (n,) confidences (see ``mode``)

        Returns
        -------
        ndarray
            (n, K) rows summing to 1 in distribution mode; (n,) confidences in confidence mode.
        """
        self._check_fitted()
        probs = check_scores(scores, self.mode, self.n_classes_ if self.mode == "distribution" else None)
        calibrated = self._predict(probs)
        return calibrated[:, 1] if self.mode == "confidence" else calibrated

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"this {self.name!r} calibrator is not fitted yet; call fit(scores, y) first"
            )

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description: format, name, mode, params and (if fitted) the fitted state."""
        state = None
        if self.is_fitted:
            state = {"n_classes": int(self.n_classes_), **self._get_state()}
        data = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": self.name,
            "mode": self.mode,
            "params": self.get_params(),
            "state": state,
        }
        # Which items it was fitted on (howsure.calibration.fitting); only present when known,
        # so files and policies written before it keep their content and policy_id.
        if getattr(self, "fit_items", None) is not None:
            data["fit_items"] = self.fit_items
        return _to_json_value(data)

    def load_state(self, state: dict[str, Any]) -> "Calibrator":
        """Restore fitted state written by :meth:`to_dict`; returns self."""
        try:
            n_classes = int(state["n_classes"])
            self._set_state(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(
                f"saved state of calibrator {self.name!r} is incomplete or malformed: {exc!r}"
            ) from exc
        self.n_classes_ = n_classes
        return self

    # -- subclass hooks -----------------------------------------------------------------------
    def _fit(self, probs: np.ndarray, labels: np.ndarray) -> None:
        raise NotImplementedError

    def _predict(self, probs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _get_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


def coerce_piece(piece: dict[str, Any]) -> dict[str, Any]:
    """Normalise one fitted piece to float / float64-array values.

    Both a freshly fitted piece and one read back from JSON pass through here, so predictions
    are computed from identical types and are bitwise equal.
    """
    out: dict[str, Any] = {}
    for key, value in piece.items():
        if isinstance(value, (list, tuple, np.ndarray)):
            out[key] = np.asarray(value, dtype=np.float64)
        else:
            out[key] = float(value)
    return out


def renormalise(columns: np.ndarray) -> np.ndarray:
    """Scale each row of non-negative one-vs-rest outputs to sum to 1.

    Parameters
    ----------
    columns : ndarray of shape (n, K)

    Returns
    -------
    ndarray of shape (n, K)
        A row whose pieces all returned 0 becomes uniform: the pieces disagree with every
        label, so no label is preferred.
    """
    totals = columns.sum(axis=1, keepdims=True)
    k = columns.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(totals > 0, columns / np.where(totals > 0, totals, 1.0), 1.0 / k)
    return normalised


class OneVsRestCalibrator(Calibrator):
    """A calibrator built from a binary map ``score -> P(positive)``.

    Binary (K = 2): one piece maps ``p[:, 1]`` to ``P(y = 1)`` and column 0 is its complement,
    so the map is not fitted twice. Multiclass: piece k maps ``p[:, k]`` to ``P(y = k)`` and
    rows are renormalised to sum to 1.
    """

    def _fit_binary(self, p: np.ndarray, positive: np.ndarray) -> dict[str, Any]:
        """Fit one map on (n,) scores and (n,) 0/1 targets; return its state."""
        raise NotImplementedError

    def _predict_binary(self, p: np.ndarray, piece: dict[str, Any]) -> np.ndarray:
        """Apply one fitted map to (n,) scores; return (n,) probabilities in [0, 1]."""
        raise NotImplementedError

    def _fit(self, probs: np.ndarray, labels: np.ndarray) -> None:
        k = probs.shape[1]
        if k == 2:
            targets = [(1, labels == 1)]
        else:
            counts = np.bincount(labels, minlength=k)
            absent = [c for c in range(k) if counts[c] == 0]
            if absent:
                raise CalibrationError(
                    f"class(es) {absent} never occur in y; the one-vs-rest calibrator "
                    f"{self.name!r} needs every one of the {k} classes among the labels "
                    f"(temperature scaling does not)"
                )
            targets = [(c, labels == c) for c in range(k)]
        self.pieces_ = [
            coerce_piece(self._fit_binary(probs[:, column], positive.astype(np.int64)))
            for column, positive in targets
        ]

    def _predict(self, probs: np.ndarray) -> np.ndarray:
        if len(self.pieces_) == 1:
            positive = np.clip(self._predict_binary(probs[:, 1], self.pieces_[0]), 0.0, 1.0)
            return np.column_stack([1.0 - positive, positive])
        columns = np.column_stack(
            [self._predict_binary(probs[:, c], piece) for c, piece in enumerate(self.pieces_)]
        )
        return renormalise(np.clip(columns, 0.0, 1.0))

    def _get_state(self) -> dict[str, Any]:
        return {"pieces": self.pieces_}

    def _set_state(self, state: dict[str, Any]) -> None:
        pieces = state["pieces"]
        expected = 1 if int(state["n_classes"]) == 2 else int(state["n_classes"])
        if len(pieces) != expected:
            raise ValueError(f"expected {expected} pieces, found {len(pieces)}")
        self.pieces_ = [coerce_piece(piece) for piece in pieces]


def platt_targets(positive: np.ndarray) -> np.ndarray:
    """Platt's (1999) smoothed targets: (N+ + 1) / (N+ + 2) for positives, 1 / (N- + 2) for negatives.

    Parameters
    ----------
    positive : ndarray of shape (n,), 0/1

    Returns
    -------
    ndarray of shape (n,)
        Soft targets strictly inside (0, 1). Fitting to these instead of hard 0/1 keeps the
        fitted coefficients finite when the calibration scores separate the classes
        perfectly, where a maximum-likelihood logistic fit would diverge.
    """
    n_positive = float(positive.sum())
    n_negative = float(positive.size - n_positive)
    return np.where(positive == 1, (n_positive + 1.0) / (n_positive + 2.0), 1.0 / (n_negative + 2.0))


def fit_logistic_soft(features: np.ndarray, targets: np.ndarray, C: float | None = None) -> tuple[np.ndarray, float]:
    """Logistic regression on soft targets, through scikit-learn's ``LogisticRegression``.

    A soft target t is the same loss as one copy of the item labelled 1 with weight t and one
    labelled 0 with weight 1 - t, which ``LogisticRegression`` takes as sample weights.

    Parameters
    ----------
    features : ndarray of shape (n, d)
    targets : ndarray of shape (n,), in [0, 1]
    C : float or None
        Inverse L2 penalty; None for none.

    Returns
    -------
    coef : ndarray of shape (d,)
    intercept : float
    """
    from sklearn.linear_model import LogisticRegression

    n = features.shape[0]
    # Newton steps suit these few-feature, many-row problems: a handful of iterations where
    # lbfgs needs dozens on the unscaled log features.
    model = LogisticRegression(C=np.inf if C is None else C, solver="newton-cholesky", tol=1e-8, max_iter=1000)
    with warnings.catch_warnings():
        # Constant scores make the Hessian singular; scikit-learn then falls back to lbfgs by
        # itself, so its warning would tell the caller nothing they can act on.
        warnings.filterwarnings("ignore", category=LinAlgWarning)
        model.fit(
            np.vstack([features, features]),
            np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)]),
            sample_weight=np.concatenate([targets, 1.0 - targets]),
        )
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])
