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

from howsure.core.validation import (  # noqa: F401  (the calibrators' checks, re-exported)
    MODES,
    ROW_SUM_TOLERANCE,
    check_fit_inputs,
    check_labels,
    check_mode,
    check_scores,
)
from howsure.errors import CalibrationError, NotFittedError

# Probabilities are clipped this far from 0 and 1 before taking logs, so that a label the
# model gave exactly zero mass costs a large but finite loss instead of an infinite one.
LOG_CLIP = 1e-12

FORMAT_NAME = "howsure.calibrator"
FORMAT_VERSION = 1


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
