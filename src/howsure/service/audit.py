"""What the stored audit rates say: the chance each auto item had to be audited, the audited
accuracy weighted by it, and that accuracy's Clopper-Pearson interval against the policy's target.

    from howsure.service.audit import audit_rates, weighted_audit
    rates = audit_rates(store, [1, 2])           # recorded / unrecorded, lowest rate
    audit = weighted_audit(store, 2)             # inverse-probability-weighted accuracy
    audit_accuracy(store.stats(policy_version=2), 0.9, weighted=audit).verdict   # "meets_target", ...

The service stores with every auto item the audit rate it ran with (``items.audit_rate``,
revision 0004). An audited item drawn at rate r stands for 1/r auto items, so when the rate
changed over time (a restart with another ``--audit-rate``) a plain proportion over audited
items over-weights the periods audited more. The weighted accuracy is the Hajek estimate
sum(w * correct) / sum(w) with w = 1/r, its sample size Kish's effective n = (sum w)^2 /
sum(w^2); with one rate throughout both equal the plain proportion and count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from howsure.service.db import items as items_t, reviews as reviews_t
from howsure.service.schemas import AuditAccuracy, Interval
from howsure.stats.intervals import clopper_pearson_one as clopper_pearson

if TYPE_CHECKING:
    from howsure.service.store import ReviewStore

__all__ = ["AuditRates", "WeightedAudit", "audit_rates", "weighted_audit", "clopper_pearson", "audit_accuracy"]


@dataclass(frozen=True)
class AuditRates:
    """Auto items of some policy versions and what is known of their audit rates.

    ``auto``: auto-handled items; ``unrecorded``: those stored without their rate (before
    revision 0004), ``unrecorded_sampled``: how many of these were drawn for audit;
    ``lowest``: the lowest recorded rate of an auto item (None without one).
    """

    auto: int
    unrecorded: int
    unrecorded_sampled: int
    lowest: float | None


@dataclass(frozen=True)
class WeightedAudit:
    """Reviewed audit items of one policy version. ``accuracy`` is weighted by the inverse of
    each item's audit rate and ``effective_n`` is Kish's effective sample size, when every
    audited item has its rate (``weighted``); otherwise they are the plain proportion and
    count. None without reviewed audit items."""

    reviewed: int
    correct: int
    accuracy: float | None
    effective_n: float | None
    weighted: bool


def audit_rates(store: "ReviewStore", versions: Sequence[int]) -> AuditRates:
    """`AuditRates` of the auto items that the policy ``versions`` decided."""
    i = items_t.c
    auto = i.decision == "auto"
    query = sa.select(
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(sa.case((i.audit_rate.is_(None), 1), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(sa.case((sa.and_(i.audit_rate.is_(None), i.queue_reason == "audit"), 1),
                                             else_=0)), 0),
        sa.func.min(i.audit_rate),
    ).where(auto, i.policy_version.in_(list(versions)))
    with store._read() as connection:
        n, unrecorded, unrecorded_sampled, lowest = connection.execute(query).one()
    return AuditRates(int(n), int(unrecorded), int(unrecorded_sampled), None if lowest is None else float(lowest))


def weighted_audit(store: "ReviewStore", policy_version: int) -> WeightedAudit:
    """`WeightedAudit` of the audit reviews of ``policy_version``."""
    query = (sa.select(reviews_t.c.agreed_with_model, items_t.c.audit_rate)
             .join(items_t, items_t.c.id == reviews_t.c.item_id)
             .where(reviews_t.c.source == "audit", reviews_t.c.policy_version == policy_version))
    rows = store._rows(query)
    correct = sum(1 for row in rows if row.agreed_with_model)
    if not rows:
        return WeightedAudit(0, 0, None, None, weighted=False)
    if any(row.audit_rate is None or row.audit_rate <= 0 for row in rows):
        return WeightedAudit(len(rows), correct, correct / len(rows), float(len(rows)), weighted=False)
    weights = [1.0 / row.audit_rate for row in rows]
    total = sum(weights)
    accuracy = sum(w for w, row in zip(weights, rows) if row.agreed_with_model) / total
    return WeightedAudit(len(rows), correct, accuracy, total**2 / sum(w * w for w in weights), weighted=True)


def audit_accuracy(stats: dict[str, Any] | None, target: float | None, level: float = 0.95,
                   weighted: WeightedAudit | None = None) -> AuditAccuracy:
    """Audited accuracy with its interval, and how it stands against the policy's target.

    With ``weighted`` (`howsure.service.audit.WeightedAudit`) the accuracy is weighted by the
    inverse of each item's audit rate and the interval uses the effective sample size."""
    reviewed = int((stats or {}).get("audit_reviewed") or 0)
    correct = int((stats or {}).get("audit_correct") or 0)
    if reviewed == 0:
        return AuditAccuracy(reviewed=0, correct=0, accuracy=None, interval=None, target=target, verdict="no_data")
    accuracy, n = correct / reviewed, float(reviewed)
    if weighted is not None and weighted.weighted and weighted.reviewed == reviewed:
        accuracy, n = weighted.accuracy, weighted.effective_n
    low, high = clopper_pearson(min(accuracy * n, n), n, level)
    if target is None:
        verdict = "no_target"
    elif high < target:
        verdict = "below_target"
    elif low >= target:
        verdict = "meets_target"
    else:
        verdict = "consistent_with_target"
    return AuditAccuracy(reviewed=reviewed, correct=correct, accuracy=accuracy,
                         interval=Interval(low=low, high=high, level=level), target=target, verdict=verdict)
