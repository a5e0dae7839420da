"""Every decision function takes the truth first, ``(correct, confidences)`` as the metrics do.

Arrays passed in the order these functions took before (confidences first) must not pass
silently: each entry point raises an error naming what it expected.
"""

from __future__ import annotations

import numpy as np
import pytest

from howsure import decisions as D
from howsure.decisions.policy_certification import certify_policy
from howsure.decisions.recalibration import certify_with_split, raw_calibration_note, recalibrate_arrays
from howsure.errors import DataError, PolicyError

RNG = np.random.default_rng(0)
N = 400
CONF = RNG.uniform(0.5, 1, N)
OK = RNG.uniform(size=N) < CONF
P_POSITIVE = RNG.uniform(size=N)
PROBS = np.column_stack([1 - P_POSITIVE, P_POSITIVE])
TRUTH = (RNG.uniform(size=N) < P_POSITIVE).astype(np.int64)
COST = D.CostModel(cost_review=1.0, cost_error=10.0, volume_per_day=100)
NOT_CORRECT = r"correct must hold 0/1 or true/false; item 0 has 0\.8"

OLD_ORDER = {
    "certify_threshold": (lambda: D.certify_threshold(CONF, OK), NOT_CORRECT),
    "labels_needed": (lambda: D.labels_needed(CONF, OK), NOT_CORRECT),
    "planned_automation_share": (lambda: D.planned_automation_share(CONF, OK, 100), NOT_CORRECT),
    "selective_counts": (lambda: D.selective_counts(CONF, OK), NOT_CORRECT),
    "selective_accuracy_curve": (lambda: D.selective_accuracy_curve(CONF, OK), NOT_CORRECT),
    "oracle_automation_share": (lambda: D.oracle_automation_share(CONF, OK, 0.9), NOT_CORRECT),
    "empirical_threshold": (lambda: D.empirical_threshold(CONF, OK), NOT_CORRECT),
    "naive_scan_threshold": (lambda: D.naive_scan_threshold(CONF, OK), NOT_CORRECT),
    "simulate_guarantee": (lambda: D.simulate_guarantee(CONF, OK, n_calibration=100, n_draws=2), NOT_CORRECT),
    "sample_size_curve": (lambda: D.sample_size_curve(CONF, OK, sizes=[100]), NOT_CORRECT),
    "optimal_threshold": (lambda: D.optimal_threshold(CONF, OK, COST), NOT_CORRECT),
    "manager_table": (lambda: D.manager_table(CONF, OK, COST), NOT_CORRECT),
    "certify_two_sided": (lambda: D.certify_two_sided(P_POSITIVE, TRUTH),
                          r"is_positive must hold 0/1 or true/false; item 0 has 0\.\d+"),
    "certify_per_class": (lambda: D.certify_per_class(PROBS, TRUTH),
                          r"probabilities must have shape \(n, K\) with K >= 2, got shape \(400,\)"),
    "certify_policy": (lambda: certify_policy(PROBS, TRUTH, labels=["a", "b"]),
                       r"confidences has 400 items but correct has shape \(400, 2\); give one 0/1 value"),
    "certify_with_split": (lambda: certify_with_split(PROBS, TRUTH, calibrator="platt", labels=["a", "b"]),
                           r"true labels must be class indices to split by, got dtype float64"),
    "raw_calibration_note": (lambda: raw_calibration_note(CONF, OK), r"correct\[0\] = 0\.8\d*; expected 0/1"),
    "recalibrate_arrays": (
        lambda: recalibrate_arrays(PROBS, TRUTH, list(range(N)), ["audit"] * N, label_names=["a", "b"],
                                   audit_rate=0.5),
        r"expected \(n, 2\) probabilities and n labels, got shapes \(400,\) and \(400, 2\)",
    ),
}


@pytest.mark.parametrize("name", sorted(OLD_ORDER))
def test_the_old_confidences_first_order_raises_naming_what_was_expected(name):
    call, match = OLD_ORDER[name]
    with pytest.raises((PolicyError, DataError), match=match):
        call()


def test_the_truth_first_order_certifies_what_keywords_certify():
    positional = D.certify_threshold(OK, CONF, 0.9, 0.05)
    by_keyword = D.certify_threshold(confidences=CONF, correct=OK, target_accuracy=0.9, delta=0.05)
    assert positional == by_keyword
    assert positional.n_calibration == N
