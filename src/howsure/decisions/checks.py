"""The checks every decision function makes of its inputs: targets, risk levels, confidences,
probabilities and class indices, each failing with a `PolicyError` that names the bad value."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from howsure.errors import PolicyError


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


def check_confidences(confidences: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a calibration set.

    Parameters
    ----------
    confidences : array-like of shape (n,)
        Confidence of each item's predicted label, in [0, 1].
    correct : array-like of shape (n,)
        Whether that predicted label was right: bool or 0/1.

    Returns
    -------
    confidences : ndarray of shape (n,), float64
    correct : ndarray of shape (n,), bool
    """
    try:
        conf = np.asarray(confidences, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"confidences must be numbers in [0, 1]: {exc}") from None
    if conf.ndim != 1:
        raise PolicyError(f"confidences must have shape (n,), got shape {conf.shape}")
    if conf.size == 0:
        raise PolicyError("the calibration set is empty; a threshold needs labelled items to certify")
    bad = ~np.isfinite(conf) | (conf < 0) | (conf > 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise PolicyError(f"confidences must be in [0, 1]; item {i} has {conf[i].item()!r}")
    raw = np.asarray(correct)
    if raw.shape != conf.shape:
        raise PolicyError(
            f"confidences has {conf.size} items but correct has shape {raw.shape}; "
            "give one 0/1 correctness per item"
        )
    if raw.dtype != bool:
        try:
            numeric = raw.astype(np.float64)
        except (TypeError, ValueError):
            raise PolicyError(f"correct must hold 0/1 or true/false, got values like {raw[:3].tolist()!r}") from None
        off = ~np.isin(numeric, (0.0, 1.0))
        if off.any():
            i = int(np.argmax(off))
            raise PolicyError(f"correct must hold 0/1 or true/false; item {i} has {raw[i].item()!r}")
        raw = numeric == 1.0
    return conf, raw



def check_choice(value: str, allowed: Sequence[str], what: str) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise `PolicyError` naming both."""
    if value not in allowed:
        raise PolicyError(f"unknown {what} {value!r}; expected one of {list(allowed)}")
    return value


def check_probabilities(probabilities: Any) -> np.ndarray:
    """Validate an (n, K) array of label probabilities (rows need not sum to 1: a policy may
    act on raw label masses) and return it as float64."""
    try:
        probs = np.asarray(probabilities, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"probabilities must be numbers: {exc}") from None
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise PolicyError(f"probabilities must have shape (n, K) with K >= 2, got shape {probs.shape}")
    if probs.shape[0] == 0:
        raise PolicyError("the calibration set is empty; a threshold needs labelled items to certify")
    bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1)
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise PolicyError(f"probabilities must be in [0, 1]; item {i}, label {k} has {probs[i, k].item()!r}")
    return probs



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

