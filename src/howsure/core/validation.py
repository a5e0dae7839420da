"""The one set of input validators: score, confidence, correctness and label arrays, checked once
by shared primitives. numpy only.

Each public validator keeps the message its callers have always shown (tests pin them, users
grep them), so the wording differs between the metric, calibration and decision checks; the code
that finds the offending value is shared. Array validators raise `ScoresError`, which is a
DataError, a PolicyError and a CalibrationError at once.

Argument order: every validator takes the truth first, ``(y_true, y_score)``, as the metrics
and the decision functions do (`check_top_label`, `check_confidences`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from howsure.errors import CalibrationError, PolicyError, ScoresError

__all__ = [
    "MODES",
    "ROW_SUM_TOLERANCE",
    "as_float_array",
    "as_vector",
    "check_confidences",
    "check_distribution",
    "check_fit_inputs",
    "check_labels",
    "check_length",
    "check_mode",
    "check_no_nan",
    "check_probabilities",
    "check_probability_map",
    "check_row_sums",
    "check_scores",
    "check_split_labels",
    "check_top_label",
    "check_unit_interval",
    "first_bad",
]

#: A row of label probabilities may miss 1 by this much: scores are float32 softmaxes, and
#: ``howsure score`` and CSV files print a limited number of digits.
ROW_SUM_TOLERANCE = 1e-4

#: The two calibration modes: (n, K) label distributions, or (n,) top-label confidences.
MODES = ("distribution", "confidence")


# --------------------------------------------------------------------------- primitives


def first_bad(mask: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first True entry of ``mask`` in row-major order, or None when there is none."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _where(index: tuple[int, ...]) -> str:
    return ", ".join(str(i) for i in index)


def as_float_array(
    values: Any, not_numeric: Callable[[Exception], str], error: type[Exception] = ScoresError
) -> np.ndarray:
    """``values`` as a float64 array of any shape; when numpy cannot make numbers of them, raise
    ``error`` with the message ``not_numeric(numpy's exception)``."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise error(not_numeric(exc)) from None


def check_no_nan(array: np.ndarray, name: str, error: type[Exception] = ScoresError) -> None:
    """Raise naming the first NaN of ``array`` (any shape) and how many there are."""
    nan = np.isnan(array)
    index = first_bad(nan)
    if index is not None:
        raise error(f"{name}[{_where(index)}] is NaN ({int(nan.sum())} NaN values in all); expected numbers")


def as_vector(values: Any, name: str, error: type[Exception] = ScoresError) -> np.ndarray:
    """``values`` as a non-empty 1-D float64 array without NaN, or raise naming ``name``."""
    array = as_float_array(values, lambda exc: f"{name} must be numeric; {exc}", error)
    if array.ndim != 1:
        raise error(f"{name} has shape {array.shape}; expected a 1-D array of items")
    if array.size == 0:
        raise error(f"{name} is empty; expected at least one item")
    check_no_nan(array, name, error)
    return array


def check_unit_interval(array: np.ndarray, name: str, error: type[Exception] = ScoresError) -> None:
    """Raise naming the first NaN of ``array``, else its first value outside [0, 1]."""
    check_no_nan(array, name, error)
    index = first_bad((array < 0.0) | (array > 1.0))
    if index is not None:
        raise error(
            f"{name}[{_where(index)}] = {float(array[index])!r} is outside [0, 1]; expected a probability"
        )


def check_length(array: np.ndarray, n_items: int, message: str, error: type[Exception] = ScoresError) -> None:
    """Raise ``message`` unless ``array`` has shape ``(n_items,)``: one value per item."""
    if np.shape(array) != (n_items,):
        raise error(message)


def check_row_sums(
    array: np.ndarray, message: str, error: type[Exception] = ScoresError, tolerance: float = ROW_SUM_TOLERANCE
) -> np.ndarray:
    """Row sums of an (n, K) array, raising for the first row more than ``tolerance`` off 1.

    ``message`` gets ``{row}`` (its index) and ``{total}`` (its sum, a float).
    """
    sums = array.sum(axis=1)
    index = first_bad(np.abs(sums - 1.0) > tolerance)
    if index is not None:
        row = index[0]
        raise error(message.format(row=row, total=float(sums[row])))
    return sums


# --------------------------------------------------------------------------- metrics' views


def check_top_label(correct: Any, confidence: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert the top-label view.

    Parameters
    ----------
    correct : array-like of shape (n,)
        1/True where the predicted label was right, 0/False where it was wrong.
    confidence : array-like of shape (n,)
        Probability the model gave its predicted label, in [0, 1].

    Returns
    -------
    correct : ndarray of shape (n,), float64 of 0.0/1.0
    confidence : ndarray of shape (n,), float64

    Raises
    ------
    ScoresError
        Mismatched lengths, no items, NaN, confidence outside [0, 1] or correctness other than
        0/1; the message names the first offending index and value.
    """
    confidence = as_vector(confidence, "confidence")
    correct = as_vector(correct, "correct")
    check_length(
        correct,
        confidence.shape[0],
        f"correct has {correct.shape[0]} items but confidence has {confidence.shape[0]}; "
        "expected one correctness value per confidence",
    )
    check_unit_interval(confidence, "confidence")
    index = first_bad(~np.isin(correct, (0.0, 1.0)))
    if index is not None:
        i = index[0]
        raise ScoresError(f"correct[{i}] = {float(correct[i])!r}; expected 0/1 or True/False")
    return correct, confidence


def check_distribution(probabilities: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert the full-distribution view.

    Parameters
    ----------
    probabilities : array-like of shape (n, K)
        Per-label probabilities; each row must sum to 1 within `ROW_SUM_TOLERANCE`.
    labels : array-like of shape (n,)
        Gold label index of each item, an integer in [0, K).

    Returns
    -------
    probabilities : ndarray of shape (n, K), float64, rows rescaled to sum to 1 exactly
    labels : ndarray of shape (n,), int64

    Raises
    ------
    ScoresError
        Wrong shapes, NaN, probabilities outside [0, 1], rows not summing to 1, label indices
        out of range.
    """
    probabilities = as_float_array(probabilities, lambda exc: f"probabilities must be numeric; {exc}")
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise ScoresError(
            f"probabilities have shape {probabilities.shape}; expected (n_items, n_labels) "
            "with at least 2 labels"
        )
    if probabilities.shape[0] == 0:
        raise ScoresError("no items to evaluate; expected at least one row of probabilities")
    check_unit_interval(probabilities, "probabilities")
    sums = check_row_sums(
        probabilities,
        "probabilities row {row} sums to {total:.6g}; expected each row to sum to 1 "
        f"(within {ROW_SUM_TOLERANCE})",
    )
    if np.any(np.abs(sums - 1.0) > 1e-12):  # leave exact rows bit for bit as given
        probabilities = probabilities / sums[:, None]
    labels_float = as_vector(labels, "labels")
    check_length(
        labels_float,
        probabilities.shape[0],
        f"labels has {labels_float.shape[0]} items but probabilities has "
        f"{probabilities.shape[0]} rows; expected one gold label per row",
    )
    n_labels = probabilities.shape[1]
    index = first_bad(
        (labels_float != np.round(labels_float)) | (labels_float < 0) | (labels_float >= n_labels)
    )
    if index is not None:
        i = index[0]
        raise ScoresError(
            f"labels[{i}] = {float(labels_float[i])!r}; expected a label index in 0..{n_labels - 1}"
        )
    return probabilities, labels_float.astype(np.int64)


# --------------------------------------------------------------------------- calibrators' inputs


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`MODES`, else raise :class:`CalibrationError` (a
    setting, not a score array)."""
    if mode not in MODES:
        raise CalibrationError(f"unknown calibration mode {mode!r}; expected one of {list(MODES)}")
    return mode


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
    ScoresError
        Empty input, wrong shape, NaN or infinity, values outside [0, 1], rows not summing to 1,
        K different from the fitted one.
    """
    check_mode(mode)
    array = as_float_array(scores, lambda exc: f"scores must be numeric, got {type(scores).__name__}: {exc}")
    if mode == "confidence":
        if array.ndim != 1:
            raise ScoresError(
                f"mode='confidence' expects scores of shape (n,) (the predicted label's confidence), "
                f"got shape {array.shape}; use mode='distribution' for (n, K) label probabilities"
            )
    elif array.ndim != 2 or array.shape[1] < 2:
        raise ScoresError(
            f"mode='distribution' expects scores of shape (n, K) with K >= 2 label probabilities, "
            f"got shape {array.shape}; use mode='confidence' for (n,) confidences"
        )
    if array.shape[0] == 0:
        raise ScoresError("scores is empty; expected at least one item")
    nan = first_bad(np.isnan(array))
    if nan is not None:
        raise ScoresError(f"scores contain NaN (first at index {nan})")
    where = first_bad((array < 0.0) | (array > 1.0))
    if where is not None:
        raise ScoresError(
            f"scores must be probabilities in [0, 1]; got {float(array[where])!r} at index {where}"
        )
    if mode == "confidence":
        return np.column_stack([1.0 - array, array])
    row_sums = check_row_sums(
        array, f"each row of scores must sum to 1 (tolerance {ROW_SUM_TOLERANCE}); " "row {row} sums to {total!r}"
    )
    if n_classes is not None and array.shape[1] != n_classes:
        raise ScoresError(
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
        raise ScoresError(f"y must have shape (n,), got shape {array.shape}")
    check_length(array, n_items, f"mismatched lengths: scores has {n_items} items but y has {array.shape[0]}")
    if array.dtype == bool:
        array = array.astype(np.int64)
    if array.dtype.kind == "f":
        nan = first_bad(np.isnan(array))
        if nan is not None:
            raise ScoresError(f"y contains NaN (first at index {nan[0]})")
        fractional = first_bad(array != np.round(array))
        if fractional is not None:
            raise ScoresError(f"y must hold integer class indices, got {float(array[fractional])!r}")
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise ScoresError(f"y must hold integer class indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    out_of_range = first_bad((array < 0) | (array >= n_classes))
    if out_of_range is not None:
        expected = "0/1 correctness" if mode == "confidence" else f"class indices in [0, {n_classes})"
        raise ScoresError(f"y value {int(array[out_of_range])} is out of range; expected {expected}")
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
        raise ScoresError(
            f"y holds one class only ({what} {int(present[0])} for all {labels.size} items); "
            f"calibration needs at least two"
        )
    return probs, labels


def check_split_labels(y: Any) -> np.ndarray:
    """Validate the labels a stratified split is drawn by: non-empty (n,), no NaN, two classes
    at least; any hashable label values (strings too)."""
    array = np.asarray(y)
    if array.ndim != 1:
        raise ScoresError(f"y must have shape (n,), got shape {array.shape}")
    if array.size == 0:
        raise ScoresError("y is empty; expected at least one item")
    nan = first_bad(np.isnan(array)) if array.dtype.kind == "f" else None
    if nan is not None:
        raise ScoresError(f"y contains NaN (first at index {nan[0]})")
    if np.unique(array).size < 2:
        raise ScoresError(
            f"y holds one class only ({array.tolist()[0]!r} for all {array.size} items); "
            f"a stratified split needs at least two"
        )
    return array


# --------------------------------------------------------------------------- decisions' inputs


def check_confidences(correct: Any, confidences: Any, *,
                      names: tuple[str, str] = ("correct", "confidences")) -> tuple[np.ndarray, np.ndarray]:
    """Validate a calibration set, truth first like every validator and decision function.

    Parameters
    ----------
    correct : array-like of shape (n,)
        Whether each item's predicted label was right: bool or 0/1.
    confidences : array-like of shape (n,)
        Confidence of that predicted label, in [0, 1].
    names : (str, str)
        The caller's names of the two arguments, for the error messages (a two-sided
        certificate calls them ``is_positive`` and ``positive_probability``).

    Returns
    -------
    correct : ndarray of shape (n,), bool
    confidences : ndarray of shape (n,), float64
    """
    truth, score = names
    conf = as_float_array(confidences, lambda exc: f"{score} must be numbers in [0, 1]: {exc}")
    if conf.ndim != 1:
        raise ScoresError(f"{score} must have shape (n,), got shape {conf.shape}")
    if conf.size == 0:
        raise ScoresError("the calibration set is empty; a threshold needs labelled items to certify")
    bad = first_bad(~np.isfinite(conf) | (conf < 0) | (conf > 1))
    if bad is not None:
        i = bad[0]
        raise ScoresError(f"{score} must be in [0, 1]; item {i} has {conf[i].item()!r}")
    raw = np.asarray(correct)
    check_length(
        raw,
        conf.size,
        f"{score} has {conf.size} items but {truth} has shape {raw.shape}; give one 0/1 value per item",
    )
    if raw.dtype != bool:
        numeric = as_float_array(
            raw, lambda _exc: f"{truth} must hold 0/1 or true/false, got values like {raw[:3].tolist()!r}"
        )
        off = first_bad(~np.isin(numeric, (0.0, 1.0)))
        if off is not None:
            i = off[0]
            raise ScoresError(f"{truth} must hold 0/1 or true/false; item {i} has {raw[i].item()!r}")
        raw = numeric == 1.0
    return raw, conf


def check_probabilities(probabilities: Any) -> np.ndarray:
    """Validate an (n, K) array of label probabilities (rows need not sum to 1: a policy may
    act on raw label masses) and return it as float64."""
    probs = as_float_array(probabilities, lambda exc: f"probabilities must be numbers: {exc}")
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ScoresError(f"probabilities must have shape (n, K) with K >= 2, got shape {probs.shape}")
    if probs.shape[0] == 0:
        raise ScoresError("the calibration set is empty; a threshold needs labelled items to certify")
    bad = first_bad(~np.isfinite(probs) | (probs < 0) | (probs > 1))
    if bad is not None:
        i, k = bad
        raise ScoresError(f"probabilities must be in [0, 1]; item {i}, label {k} has {probs[i, k].item()!r}")
    return probs


def check_target(target_accuracy: Any) -> float:
    """Return ``target_accuracy`` as a float in (0, 1) or raise `PolicyError` naming it."""
    try:
        value = float(target_accuracy)
    except (TypeError, ValueError):
        raise PolicyError(f"target accuracy must be a number in (0, 1), got {target_accuracy!r}") from None
    if not 0.0 < value < 1.0 or math.isnan(value):
        hint = (
            "; accuracy is a fraction, write 0.95 for 95 %" if value > 1 else
            "; a target of exactly 1 (no error ever) cannot be certified from a finite sample"
            if value == 1 else ""
        )
        raise PolicyError(f"target accuracy must be in (0, 1), got {target_accuracy!r}{hint}")
    return value


def check_delta(delta: Any) -> float:
    """Return ``delta`` as a float in (0, 1) or raise `PolicyError` naming it."""
    try:
        value = float(delta)
    except (TypeError, ValueError):
        raise PolicyError(f"delta must be a number in (0, 1), got {delta!r}") from None
    if not 0.0 < value < 1.0 or math.isnan(value):
        raise PolicyError(
            f"delta (the chance the guarantee may fail) must be in (0, 1), got {delta!r}; "
            "0.05 means the certified accuracy holds with probability 0.95"
        )
    return value


def check_choice(value: str, allowed: Sequence[str], what: str) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise `PolicyError` naming both."""
    if value not in allowed:
        raise PolicyError(f"unknown {what} {value!r}; expected one of {list(allowed)}")
    return value


def check_class_indices(true_labels: Any, n: int, k: int) -> np.ndarray:
    """Validate (n,) class indices in [0, k) and return them as int64."""
    truth = np.asarray(true_labels)
    if truth.shape != (n,):
        raise PolicyError(f"expected {n} true labels, got shape {truth.shape}")
    if truth.dtype.kind not in "iu":
        raise PolicyError(f"true labels must be class indices (integers), got dtype {truth.dtype}")
    bad = (truth < 0) | (truth >= k)
    if bad.any():
        i = int(np.argmax(bad))
        raise PolicyError(f"true label {int(truth[i])} of item {i} is not a class index in [0, {k})")
    return truth.astype(np.int64)


# --------------------------------------------------------------------------- one item's label map


def check_probability_map(value: Any, what: str, error: type[Exception] = ScoresError) -> None:
    """Check a non-empty dict label -> probability in [0, 1] (one stored or requested item).

    ``error`` is the type to raise: the review store passes its StoreError (a bad request field,
    HTTP 400) where a library caller gets `ScoresError`.
    """
    if not isinstance(value, dict) or not value:
        raise error(f"{what} must be a non-empty dict label -> probability, got {value!r}")
    for label, p in value.items():
        if not isinstance(label, str) or isinstance(p, bool) or not isinstance(p, (int, float)) \
                or not math.isfinite(p) or not 0 <= p <= 1:
            raise error(f"{what}: {label!r} -> {p!r} is not a label with a probability in [0, 1]")
