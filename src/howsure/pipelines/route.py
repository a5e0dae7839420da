"""`howsure route` as one library call: scored items in, each record with the policy's decision
(auto or review), its label and calibrated confidence out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from howsure.decisions.policy import Policy
from howsure.errors import DataError
from howsure.io.scored import read_scored


@dataclass
class RoutedItems:
    """The routed records (input records plus ``decision``, ``decision_label``,
    ``decision_confidence`` and ``policy_id``), which were automated, and the policy."""

    records: list[dict[str, Any]]
    automated: np.ndarray
    policy: Policy


def route_items(path: Path, policy_path: Path, *, prob_column: str | None = None,
                prediction_column: str = "prediction") -> RoutedItems:
    """Decide every scored item of ``path`` by the policy file ``policy_path``; gold labels and
    correctness in the input are ignored (routing needs none)."""
    policy = Policy.load(policy_path)
    items = read_scored(path, prob_column=prob_column, prediction_column=prediction_column,
                        labels=policy.labels, read_truth=False)
    if items.probabilities is None:
        raise DataError(
            f"{path} gives only the predicted label's confidence for {len(policy.labels)} labels; "
            "routing needs every label's probability (the 'probabilities' column of howsure score)"
        )
    predicted, confidence, _ = policy.calibrate(items.probabilities)
    automated = policy.automate(predicted, confidence)
    routed = [
        {**record, "decision": "auto" if a else "review", "decision_label": policy.labels[p],
         "decision_confidence": round(float(c), 8), "policy_id": policy.policy_id}
        for record, p, c, a in zip(items.records, predicted, confidence, automated)
    ]
    return RoutedItems(routed, automated, policy)
