"""Decide what to automate: certified thresholds, cost-optimal thresholds, sample-size planning
and the simulations that check them.

Everything here works on plain arrays of confidences and correctness and returns numbers; the
CLI and the plots draw them. Only numpy and ``scipy.special`` are imported here, so ``howsure
thresholds`` and ``howsure route`` start quickly; the policy file (`howsure.decisions.policy`)
and recalibration (`howsure.decisions.recalibration`, which fits calibrators) are imported on
their own. The guarantee and its validity argument: `howsure.decisions.certification`.
"""

from howsure.decisions.certification import (
    PerClassCertificate,
    ThresholdCertificate,
    TwoSidedCertificate,
    certify_per_class,
    certify_threshold,
    certify_two_sided,
    predicted_and_confidence,
)
from howsure.core.validation import (
    check_choice,
    check_class_indices,
    check_confidences,
    check_delta,
    check_probabilities,
    check_target,
)
from howsure.decisions.costs import (
    INTERVAL_LEVEL,
    CostDecision,
    CostModel,
    PolicyRow,
    manager_table,
    optimal_threshold,
)
from howsure.decisions.planning import (
    PLANNING_MIN_FLOOR,
    PLANNING_MIN_ITEMS,
    labels_needed,
    planned_automation_share,
)
from howsure.decisions.pvalues import (
    DEFAULT_METHOD,
    METHODS,
    P_VALUES,
    binomial_p_value,
    hoeffding_bentkus_p_value,
    min_items_to_certify,
    p_value_function,
)
from howsure.decisions.selective import selective_accuracy_curve, selective_counts
from howsure.decisions.simulation import (
    SIMULATION_RULES,
    empirical_threshold,
    naive_scan_threshold,
    oracle_automation_share,
    sample_size_curve,
    simulate_guarantee,
)
from howsure.decisions.walks import CALIBRATED_START_MULTIPLES, DEFAULT_STARTS, calibrated_starts

__all__ = [
    "CALIBRATED_START_MULTIPLES",
    "DEFAULT_METHOD",
    "DEFAULT_STARTS",
    "INTERVAL_LEVEL",
    "METHODS",
    "PLANNING_MIN_FLOOR",
    "PLANNING_MIN_ITEMS",
    "P_VALUES",
    "SIMULATION_RULES",
    "CostDecision",
    "CostModel",
    "PerClassCertificate",
    "PolicyRow",
    "ThresholdCertificate",
    "TwoSidedCertificate",
    "binomial_p_value",
    "calibrated_starts",
    "certify_per_class",
    "certify_threshold",
    "certify_two_sided",
    "check_choice",
    "check_class_indices",
    "check_confidences",
    "check_delta",
    "check_probabilities",
    "check_target",
    "empirical_threshold",
    "hoeffding_bentkus_p_value",
    "labels_needed",
    "manager_table",
    "min_items_to_certify",
    "naive_scan_threshold",
    "optimal_threshold",
    "oracle_automation_share",
    "p_value_function",
    "planned_automation_share",
    "predicted_and_confidence",
    "sample_size_curve",
    "selective_accuracy_curve",
    "selective_counts",
    "simulate_guarantee",
]
