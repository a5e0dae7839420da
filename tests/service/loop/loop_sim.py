"""Helpers of the learning-loop tests (imported by name: `from loop_sim import ...`).

A simulated review service: a policy certified on synthetic
model outputs, items decided by it and stored through the real `ReviewStore`, and reviewers
who claim and label queued items through the real queue.

    served = serve(store, record, 300, audit_rate=0.5)   # stores items, returns their truth
    review(store, served)                                # every queued item reviewed
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LABELS = ["negative", "positive"]


def population(n: int, seed: int, *, mean_margin: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Raw binary probabilities of an over-confident model and the true label indices.

    ``mean_margin`` 2.5: about 90 % accurate, 99 % in its most confident half. A lower
    margin is a drifted population: less confident and less accurate.
    """
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    p_true = 1 / (1 + np.exp(-rng.normal(mean_margin, 2.0, n)))
    p_positive = np.where(truth == 1, p_true, 1 - p_true)
    return np.column_stack([1 - p_positive, p_positive]), truth


def loop_policy_dict(*, model_id: str = "test-model", n: int = 2000, seed: int = 0,
                     target_accuracy: float = 0.95) -> dict[str, Any]:
    """A policy certified (no calibrator) on ``n`` items of `population`, with a task."""
    from howsure.decisions.policy_certification import certify_policy

    probabilities, truth = population(n, seed)
    task = {"name": "test-sentiment", "instruction": "Is this positive or negative?\n\n{text}",
            "labels": {label: [label] for label in LABELS}}
    # fixed_sequence, which recalibration keeps: the loop tests re-certify on about 170 reviewed
    # items at 95 %, where it certifies and the fallback default (no top-slice condition, starts
    # fixed in advance) needs about 400.
    policy = certify_policy(truth, probabilities, target_accuracy=target_accuracy, delta=0.05,
                            labels=LABELS, task=task, model_id=model_id, method="fixed_sequence")
    assert policy.guarantee["certified"]
    return policy.to_dict()


@dataclass
class Served:
    """Items stored by `serve`: their records and the true label of each item id."""

    records: list[Any]
    truth: dict[int, str] = field(default_factory=dict)


def serve(store: Any, record: Any, n: int, *, audit_rate: float, seed: int = 1,
          mean_margin: float = 2.5, text_prefix: str = "item", record_rate: bool = False) -> Served:
    """Decide ``n`` items of `population` with the stored policy ``record`` as the service
    does (auto items audited with probability ``audit_rate``) and store them in one batch.
    ``record_rate`` stores the rate with each auto item, as the service does since revision
    0004; without it the items look like ones stored before."""
    from howsure.service.store import NewItem

    policy = record.to_policy()
    probabilities, truth = population(n, seed, mean_margin=mean_margin)
    rng = np.random.default_rng(seed + 1000)
    items = []
    for i, (row, decision) in enumerate(zip(probabilities, policy.decide(probabilities))):
        audited = decision.decision == "auto" and rng.random() < audit_rate
        items.append(NewItem(
            text=f"{text_prefix} {seed}-{i}", prediction=decision.label, confidence=decision.confidence,
            probabilities=decision.probabilities,
            raw_probabilities={label: float(p) for label, p in zip(policy.labels, row)},
            decision=decision.decision,
            queue_reason="review" if decision.decision == "review" else ("audit" if audited else None),
            policy_version=record.version, policy_id=record.policy_id,
            audit_rate=audit_rate if record_rate and decision.decision == "auto" else None,
        ))
    records = store.add_items(items, actor="client")
    return Served(records, {r.id: LABELS[t] for r, t in zip(records, truth)})


def review(store: Any, served: Served, *, reviewer: str = "rev", limit: int | None = None) -> int:
    """Claim and label queued items through the queue, oldest first, with their true labels;
    at most ``limit``. Returns how many were reviewed."""
    done = 0
    while limit is None or done < limit:
        item = store.claim_next(reviewer)
        if item is None:
            break
        store.submit_review(item.id, reviewer, served.truth[item.id])
        done += 1
    return done
