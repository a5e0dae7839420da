"""Certify a policy from arrays: resolve its labels and true labels, apply its calibrator,
certify the threshold(s), and record the guarantee, the fingerprint of the data and the
reference confidences a drift check compares live items with. The file itself:
`howsure.decisions.policy`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from howsure.core.validation import check_class_indices, check_confidences, check_delta, check_target
from howsure.decisions.certification import certify_per_class, certify_threshold
from howsure.decisions.costs import CostModel, optimal_threshold
from howsure.decisions.policy import MAX_REFERENCE, Policy, REFERENCE_DIGITS
from howsure.decisions.pvalues import DEFAULT_METHOD, min_items_to_certify
from howsure.decisions.walks import DEFAULT_STARTS, calibrated_starts
from howsure.errors import PolicyError

ASSUMPTION = (
    "calibration items and future items are independent draws from the same population, "
    "and the calibrator (if any) was fitted on other items"
)


def assumption_text(method: str, target_accuracy: float, delta: float, p_value: str = "binomial",
                    *, per_label: bool = False) -> str:
    """The ``guarantee.assumption`` a new policy stores.

    ``fallback`` and ``multistart`` need only `ASSUMPTION`. ``fixed_sequence`` starts its walk at a data-dependent
    threshold (the strictest one automating `min_items_to_certify` calibration items), which
    adds one condition (docs/decisions.md, the `--method fixed_sequence` entry); the text names it with the
    number of items for this target and ``delta`` (with ``per_label``, pass each label's share of
    delta: the walks then run over the items predicted as each label).
    Old files keep whatever text they were written with: it is part of their ``policy_id``.
    """
    if method != "fixed_sequence":
        return ASSUMPTION
    m0 = min_items_to_certify(target_accuracy, delta, p_value)
    if per_label:
        walk = (f"each label's fixed_sequence walk starts at the strictest threshold that automates "
                f"{m0} of the calibration items predicted as that label")
        slice_ = "no top slice of a label's most confident items"
    else:
        walk = f"the fixed_sequence walk starts at the strictest threshold that automates {m0} calibration items"
        slice_ = "no top slice of the most confident items"
    return (
        f"{ASSUMPTION}. Because {walk}, it also assumes that {slice_} too small to hold {m0} "
        "calibration items is less accurate than the target, which is always true when accuracy "
        "does not fall as the threshold tightens (methods fallback and multistart do not need this)."
    )



def reference_quantiles(confidence: Any, max_values: int = MAX_REFERENCE) -> list[float]:
    """The sorted confidences, or ``max_values`` evenly spaced quantiles of them when there
    are more, rounded to `REFERENCE_DIGITS` digits: the ``reference`` a policy stores.

    Parameters
    ----------
    confidence : array-like of shape (n,)
        Calibrated top-label confidences of the certification items.
    max_values : int
        Most values kept; a drift test against the summary then treats it as a sample of that
        size, which is conservative (fewer points, wider p-values) rather than optimistic.

    Returns
    -------
    list of float, sorted, length ``min(n, max_values)``
    """
    values = np.sort(np.asarray(confidence, dtype=np.float64).ravel())
    if values.size == 0:
        raise PolicyError("a reference distribution needs at least one confidence")
    if not np.all(np.isfinite(values)) or values[0] < -1e-9 or values[-1] > 1 + 1e-9:
        raise PolicyError(f"reference confidences must lie in [0, 1], got range [{values[0]!r}, {values[-1]!r}]")
    values = np.clip(values, 0.0, 1.0)  # rounding error of a calibrator, not a real excursion
    if values.size > max_values:
        values = np.quantile(values, np.linspace(0.0, 1.0, max_values))
    # Rounding keeps order (it is monotone), so the list stays sorted.
    return [float(v) for v in np.round(values, REFERENCE_DIGITS)]


def data_fingerprint(truth: np.ndarray, scores: np.ndarray, labels: Sequence[str]) -> str:
    """``sha256:...`` over the calibration data exactly as certified (scores, truth, labels)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"labels": list(labels), "scores_shape": list(scores.shape)}).encode())
    digest.update(np.ascontiguousarray(scores, dtype="<f8").tobytes())
    digest.update(np.ascontiguousarray(truth, dtype="<i8").tobytes())
    return "sha256:" + digest.hexdigest()


def _resolve_labels(labels: Sequence[str] | None, task: Any, k: int | None) -> tuple[list[str], dict | None]:
    task_dict = None
    if task is not None:
        task_dict = task.to_dict() if hasattr(task, "to_dict") else dict(task)
        task_labels = list(task_dict.get("labels", {}))
        if labels is not None:
            for label in labels:
                if label not in task_labels:
                    raise PolicyError(f"label {label!r} is not one of the task's labels {task_labels}")
            if list(labels) != task_labels:
                raise PolicyError(f"labels {list(labels)} must be the task's labels in its order: {task_labels}")
        labels = task_labels
    if labels is None:
        raise PolicyError("give the label names (labels=[...]) or the task, so decisions can name labels")
    labels = [str(label) for label in labels]
    if k is not None and len(labels) != k:
        raise PolicyError(f"got {len(labels)} labels {labels} for {k} probability columns")
    return labels, task_dict


def _truth_indices(truth: Any, labels: list[str], n: int) -> np.ndarray:
    array = np.asarray(truth)
    if array.shape != (n,):
        raise PolicyError(f"expected {n} true labels (one per item), got shape {array.shape}")
    if array.dtype.kind in "iu":
        return check_class_indices(array, n, len(labels))
    if array.dtype == bool:
        raise PolicyError(
            "with (n, K) probabilities give the true labels (names or indices), not correctness; "
            "pass (n,) confidences to certify from correctness"
        )
    index = {label: i for i, label in enumerate(labels)}
    out = np.empty(n, dtype=np.int64)
    for i, value in enumerate(array.tolist()):
        if value not in index:
            raise PolicyError(f"true label {value!r} of item {i} is not one of the labels {labels}")
        out[i] = index[value]
    return out


def certify_policy(
    truth: Any,
    scores: Any,
    *,
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    labels: Sequence[str] | None = None,
    task: Any = None,
    calibrator: Any = None,
    model_id: str | None = None,
    method: str = DEFAULT_METHOD,
    p_value: str = "binomial",
    per_class: bool = False,
    cost: CostModel | None = None,
    version: int = 1,
) -> Policy:
    """Certify a policy from arrays.

    Parameters
    ----------
    truth : array-like of shape (n,)
        With (n, K) scores: the true labels, as names or indices. With (n,) scores: whether
        each predicted label was right (bool or 0/1).
    scores : array-like of shape (n, K) or (n,)
        Raw label probabilities of the calibration items (columns in label order), or the raw
        confidence of each item's predicted label.
    target_accuracy, delta : float in (0, 1)
        With probability at least ``1 - delta`` over the calibration draw, automated items are
        at least ``target_accuracy`` accurate (per predicted label with ``per_class``).
    labels : sequence of str, optional
        Label names in column order; taken from ``task`` when omitted.
    task : howsure.task.Task or dict, optional
        Stored in the policy; its labels must match ``labels``.
    calibrator : fitted calibrator, its ``to_dict()``, or None
        Applied to ``scores`` here and to every input of `Policy.decide`. None: raw scores.
    model_id : str, optional
    method, p_value : str
        See `howsure.decisions.certify_threshold`. The walks of ``fallback`` and ``multistart``
        start at `howsure.decisions.calibrated_starts` of the target when there is a
        calibrator, else at `howsure.decisions.DEFAULT_STARTS`.
    per_class : bool
        One threshold per predicted label (needs (n, K) scores), all certified jointly.
    cost : CostModel, optional
        Choose, among the certified thresholds (or automating nothing), the one with the lowest
        expected daily cost, and store the cost figures.
    version : int
        Your version number of this policy.

    Returns
    -------
    Policy
        When nothing can be certified the policy automates nothing, and its guarantee says how
        many labelled items would be needed (``labels_needed``).
    """
    target = check_target(target_accuracy)
    delta = check_delta(delta)
    try:
        array = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"scores must be numbers: {exc}") from None
    if array.ndim not in (1, 2):
        raise PolicyError(f"scores must have shape (n, K) or (n,), got shape {array.shape}")
    if array.shape[0] == 0:
        raise PolicyError("the calibration set is empty; a threshold needs labelled items to certify")
    label_names, task_dict = _resolve_labels(labels, task, array.shape[1] if array.ndim == 2 else None)
    policy = Policy(
        labels=label_names, rule="per_class" if per_class else "top_label", threshold=None,
        class_thresholds={} if per_class else None, guarantee={}, data_fingerprint="",
        calibrator=None, task=task_dict, model_id=model_id, version=version,
    )
    policy.use_calibrator(calibrator)

    if array.ndim == 2:
        truth_index = _truth_indices(truth, label_names, array.shape[0])
        predicted, confidence, calibrated = policy.calibrate(array)
        correct = predicted == truth_index
        predicted_names = [label_names[i] for i in predicted]
    else:
        if per_class:
            raise PolicyError("per-class thresholds need (n, K) label probabilities, not (n,) confidences")
        calib = policy.loaded_calibrator()
        if calib is not None and calib.mode != "confidence":
            raise PolicyError(
                f"a {calib.mode!r}-mode calibrator needs (n, K) label probabilities; with (n,) "
                "confidences use a calibrator fitted with mode='confidence'"
            )
        correct, raw = check_confidences(truth, array)
        confidence = raw if calib is None else np.asarray(calib.predict_proba(raw), dtype=np.float64)
        truth_index = correct.astype(np.int64)
        predicted_names = None

    policy.data_fingerprint = data_fingerprint(truth_index, array, label_names)
    guarantee: dict[str, Any] = {
        "kind": policy.rule, "target_accuracy": target, "delta": delta, "method": method,
        "p_value": p_value,
        # Per label each class is certified at delta / K, so its walk starts later.
        "assumption": assumption_text(method, target, delta / len(label_names) if per_class else delta,
                                      p_value, per_label=per_class),
    }
    starts = DEFAULT_STARTS if policy.calibrator is None else calibrated_starts(target)
    if per_class:
        # Certified on the label each item is routed as (Policy.calibrate's), which with a
        # confidence-mode calibrator need not be the calibrated argmax.
        certificate = certify_per_class(truth_index, calibrated, target, delta, labels=label_names,
                                        joint=True, method=method, p_value=p_value, starts=starts,
                                        predicted=predicted)
        policy.class_thresholds = certificate.thresholds
        guarantee["joint"] = True
        guarantee["n_calibration"] = int(array.shape[0])
        guarantee["classes"] = {
            label: (cert.to_dict() if cert is not None else None)
            for label, cert in certificate.certificates.items()
        }
        guarantee["certified"] = any(t is not None for t in certificate.thresholds.values())
        if cost is not None:
            raise PolicyError("cost optimisation is available for top_label policies; drop per_class or cost")
    else:
        certificate = certify_threshold(correct, confidence, target, delta, method=method, p_value=p_value,
                                        starts=starts)
        guarantee.update(certificate.to_dict())
        policy.threshold = certificate.threshold
        if cost is not None:
            decision = optimal_threshold(correct, confidence, cost, predicted_labels=predicted_names,
                                         certificate=certificate)
            policy.threshold = decision.best.threshold
            policy.cost = {
                **cost.to_dict(),
                "chosen": decision.best.to_dict(),
                "review_everything": decision.review_everything.to_dict(),
                "automate_everything": decision.automate_everything.to_dict(),
            }
    policy.guarantee = guarantee
    policy.reference = reference_quantiles(confidence)
    policy._validate()
    return policy
