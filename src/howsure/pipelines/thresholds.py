"""`howsure thresholds` as one library call: read scored items, bring or fit a calibrator, certify
a policy, and the manager's table of thresholds on the items the certificate stands on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from howsure.calibration import load_calibrator
from howsure.core.scored import ScoredItems
from howsure.core.task import load_task
from howsure.core.validation import check_delta, check_target
from howsure.decisions.certification import ThresholdCertificate, certify_threshold
from howsure.decisions.costs import CostModel, PolicyRow, manager_table
from howsure.decisions.policy import Policy
from howsure.decisions.policy_certification import certify_policy
from howsure.decisions.pvalues import min_items_to_certify
from howsure.decisions.recalibration import (
    SplitCertification, certify_with_split, check_calibrator_overlap, raw_calibration_note,
)
from howsure.decisions.selective import selective_counts
from howsure.decisions.walks import DEFAULT_STARTS, top_slice_below_target
from howsure.errors import DataError, PolicyError
from howsure.io.scored import read_scored
from howsure.pipelines.adapter_guard import check_adapter_overlap

DEFAULT_VOLUME = 1000  # per-day figures are "per 1,000 items" when no volume is given


@dataclass
class ThresholdsResult:
    """What `run_thresholds` made; nothing is written yet (`policy.save` writes the policy).

    ``split``: with a calibrator fitted here, the parts it was fitted and certified on.
    ``overlap``: with a fitted calibrator brought along, `check_calibrator_overlap`'s record.
    ``adapter_overlap``: scores from a LoRA adapter, `check_adapter_overlap`'s statement.
    ``raw_note``: with neither, the warning when the raw confidences are badly calibrated.
    ``certificate`` and ``rows``: top-label policies only, on the calibrated confidences of the
    certifying items (the same confidences as the policy's certificate).
    ``top_slice_miss``: ``fixed_sequence`` only, (items, accuracy, smallest testable slice) when
    the most confident items themselves miss the target, which that method assumes they do not.
    """

    items: ScoredItems
    policy: Policy
    cost: CostModel | None
    volume: float | None
    split: SplitCertification | None = None
    overlap: dict[str, Any] | None = None
    adapter_overlap: dict[str, Any] | None = None
    raw_note: str | None = None
    certificate: ThresholdCertificate | None = None
    rows: list[PolicyRow] | None = None
    top_slice_miss: tuple[int, float, int] | None = None

    @property
    def used(self) -> np.ndarray:
        """Indices of the items the certificate (and the table) stand on."""
        return np.arange(self.items.n_items) if self.split is None else self.split.certify_idx


def run_thresholds(
    path: Path,
    *,
    target: float = 0.95,
    delta: float = 0.05,
    method: str = "fallback",
    p_value: str = "binomial",
    per_class: bool = False,
    calibrator: Path | None = None,
    fit_calibrator: str | None = None,
    certify_share: float = 0.5,
    seed: int = 0,
    allow_overlap: bool = False,
    adapter: Path | None = None,
    task: str | None = None,
    model_id: str | None = None,
    cost_review: float | None = None,
    cost_error: float | None = None,
    cost_error_by_label: dict[str, float] | None = None,
    volume: float | None = None,
    policy_version: int = 1,
    prob_column: str | None = None,
    label_column: str | None = None,
    correct_column: str | None = None,
    prediction_column: str = "prediction",
) -> ThresholdsResult:
    """Certify a confidence threshold on the scored, labelled items of ``path``.

    ``calibrator``: a fitted calibrator file, checked against its recorded fitting items
    (``allow_overlap`` certifies anyway, and the policy says the guarantee does not hold).
    ``adapter``: the LoRA adapter the scores came from (by default the one ``path``'s meta
    names): items it trained on are refused the same way (`check_adapter_overlap`).
    ``fit_calibrator``: a calibrator name fitted here on ``1 - certify_share`` of the items,
    the threshold certified on the rest. The costs, when given, choose the cost-optimal
    certified threshold; ``cost_error_by_label`` sets the error cost per predicted label
    (``cost_error`` fills the labels it leaves out). The other arguments are those of
    `howsure.policy.certify_policy` and `howsure.io.scored.read_scored`.
    """
    check_target(target)
    check_delta(delta)
    task_obj = load_task(task) if task is not None else None
    items = read_scored(path, prob_column=prob_column, label_column=label_column, correct_column=correct_column,
                        prediction_column=prediction_column,
                        labels=task_obj.label_names if task_obj is not None else None)
    if items.correct is None:
        raise DataError(f"{path} has neither gold labels nor correctness; give --label-column or --correct-column")
    adapter_overlap = check_adapter_overlap(path, items.texts, adapter=adapter, allow_overlap=allow_overlap)
    if fit_calibrator is not None:
        if calibrator is not None:
            raise PolicyError(f"--calibrator {calibrator} and --fit-calibrator {fit_calibrator} exclude each other; "
                              "bring a fitted calibrator or fit one here")
        if not items.has_distribution:
            raise DataError(
                f"--fit-calibrator needs every label's probability and the gold labels; {path} gives "
                "only the predicted label's confidence and correctness"
            )
    calibrator_obj = overlap = None
    if calibrator is not None:

        calibrator_obj = load_calibrator(calibrator)
        overlap = check_calibrator_overlap(calibrator_obj, texts=items.texts, ids=items.real_ids,
                                           allow_overlap=allow_overlap, source=str(path))
    cost = _cost_model(items.label_names, cost_review, cost_error, cost_error_by_label or {}, volume)

    common = dict(target_accuracy=target, delta=delta, labels=items.label_names, task=task_obj, model_id=model_id,
                  method=method, p_value=p_value, per_class=per_class, cost=cost, version=policy_version)
    split = None
    if fit_calibrator is not None:
        split = certify_with_split(items.labels, items.probabilities, calibrator=fit_calibrator,
                                   test_size=certify_share, seed=seed, texts=items.texts, ids=items.real_ids,
                                   **common)
        policy = split.policy
    elif items.has_distribution:
        policy = certify_policy(items.labels, items.probabilities, calibrator=calibrator_obj, **common)
    else:
        policy = certify_policy(items.correct, items.confidence, calibrator=calibrator_obj, **common)
    if overlap is not None:
        policy.guarantee["calibrator_overlap"] = overlap
    if adapter_overlap is not None:
        policy.guarantee["adapter_overlap"] = adapter_overlap
    result = ThresholdsResult(items, policy, cost, volume, split=split, overlap=overlap,
                              adapter_overlap=adapter_overlap)
    if split is None and calibrator_obj is None:
        result.raw_note = raw_calibration_note(items.correct, items.confidence)
    if policy.rule == "top_label":
        _add_threshold_table(result, target, delta, method, p_value)
    return result


def _cost_model(labels: list[str], cost_review: float | None, cost_error: float | None,
                per_label: dict[str, float], volume: float | None) -> CostModel | None:
    if cost_review is None and cost_error is None and not per_label:
        return None
    if cost_review is None or (cost_error is None and not per_label):
        raise PolicyError("cost optimisation needs --cost-review and --cost-error (or --cost-error-label)")
    if per_label and cost_error is not None:
        per_label = {label: per_label.get(label, cost_error) for label in labels}
    return CostModel(cost_review, per_label or cost_error, volume if volume is not None else DEFAULT_VOLUME)


def _add_threshold_table(result: ThresholdsResult, target: float, delta: float, method: str, p_value: str) -> None:
    """The certificate and the manager's rows of a top-label policy, on the same calibrated
    confidences the policy certified (the certifying part's, with a calibrator fitted here)."""
    items, policy, used = result.items, result.policy, result.used
    if items.has_distribution:
        predicted, confidence, _ = policy.calibrate(items.probabilities[used])
        predicted_names = [policy.labels[i] for i in predicted]
        correct = (np.asarray(predicted) == items.labels[used]).astype(float)
    else:
        confidence = items.confidence
        calib = policy.loaded_calibrator()
        if calib is not None:
            confidence = np.asarray(calib.predict_proba(confidence), dtype=np.float64)
        correct, predicted_names = items.correct, items.predicted
    result.certificate = certify_threshold(correct, confidence, target, delta, method=method, p_value=p_value,
                                           starts=policy.guarantee["starts"] or DEFAULT_STARTS,
                                           plan_if_uncertified=False)
    if method == "fixed_sequence":
        result.top_slice_miss = top_slice_miss(correct, confidence, target, delta, p_value)
    table_cost = result.cost or CostModel(0.0, 0.0, result.volume if result.volume is not None else DEFAULT_VOLUME)
    rows = manager_table(correct, confidence, table_cost, certificate=result.certificate,
                         predicted_labels=predicted_names if isinstance(table_cost.cost_error, dict) else None)
    result.rows = rows if result.cost is not None else [r for r in rows if "cheapest" not in r.note]


def top_slice_miss(correct: np.ndarray, confidence: np.ndarray, target: float, delta: float,
                   p_value: str) -> tuple[int, float, int] | None:
    """(items, accuracy, m0) when the most confident ``items`` (fewer than ``m0``, the smallest
    slice that can be tested) are only ``accuracy`` right, below ``target``: ``fixed_sequence``
    assumes no such slice; None when the calibration items show none."""
    m0 = min_items_to_certify(target, delta, p_value)
    _, n_auto, n_err = selective_counts(correct, confidence)
    found = top_slice_below_target(n_auto, n_err, 1 - target, m0)
    return None if found is None else (found[0], found[1], m0)
