"""Reading for statistics and learning: counts per policy version, reviewed items with their
labels (recalibration, export), and live confidences (the drift check)."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from howsure.service.db import items as items_t, reviews as reviews_t
from howsure.service.store.base import StoreBase, as_datetime, waiting
from howsure.service.store.records import LabelledItem
from howsure.service.store.validation import check_int

__all__ = ["StatsStore"]


class StatsStore(StoreBase):
    """Aggregates over items and reviews."""

    def stats(self, *, policy_version: int | None = None) -> dict[str, Any]:
        """Counts over all items, or over the items one policy version decided.

        Returns
        -------
        dict
            ``items``; ``auto`` and ``review`` (decisions); ``automation_rate`` (auto / items,
            None without items); ``audit_sampled`` (auto items queued for audit),
            ``audit_reviewed`` and ``audit_correct`` (audit reviews, and those agreeing with the
            model); ``queue_length`` (waiting to be claimed), ``claimed`` (under an unexpired
            lease); ``oldest_queued_age_s`` (seconds the oldest unreviewed queue item has
            waited, None when the queue is empty); ``reviews``; ``policy_version`` (the filter).
        """
        if policy_version is not None:
            policy_version = check_int(policy_version, "policy version")
        now = self.now()
        i, r = items_t.c, reviews_t.c

        def count(condition: Any) -> Any:
            return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

        item_query = sa.select(
            sa.func.count().label("items"),
            count(i.decision == "auto").label("auto"),
            count(i.decision == "review").label("review"),
            count(i.queue_reason == "audit").label("audit_sampled"),
            count(waiting(now)).label("queue_length"),
            count(sa.and_(i.status == "claimed", i.claim_expires_at >= now)).label("claimed"),
            sa.func.min(sa.case((i.status.in_(("queued", "claimed")), i.queued_at), else_=None)).label("oldest"),
        ).select_from(items_t)
        review_query = sa.select(
            sa.func.count().label("reviews"),
            count(r.source == "audit").label("audit_reviewed"),
            count(sa.and_(r.source == "audit", r.agreed_with_model.is_(True))).label("audit_correct"),
        ).select_from(reviews_t)
        if policy_version is not None:
            item_query = item_query.where(i.policy_version == policy_version)
            review_query = review_query.where(r.policy_version == policy_version)
        with self._read() as connection:
            counts = connection.execute(item_query).one()
            review_counts = connection.execute(review_query).one()
        # min() over a CASE loses the column type: SQLite hands back the stored text.
        oldest = as_datetime(counts.oldest)
        return {
            "items": int(counts.items),
            "auto": int(counts.auto),
            "review": int(counts.review),
            "automation_rate": counts.auto / counts.items if counts.items else None,
            "audit_sampled": int(counts.audit_sampled),
            "audit_reviewed": int(review_counts.audit_reviewed),
            "audit_correct": int(review_counts.audit_correct),
            "queue_length": int(counts.queue_length),
            "claimed": int(counts.claimed),
            "oldest_queued_age_s": None if oldest is None else max(0.0, (now - oldest).total_seconds()),
            "reviews": int(review_counts.reviews),
            "policy_version": policy_version,
        }

    def labelled_items(self, *, policy_version: int | None = None) -> list[LabelledItem]:
        """Every reviewed item with its human label, oldest review first.

        ``policy_version`` keeps the items that version decided (their raw probabilities are
        in that version's label order).
        """
        query = (sa.select(items_t, reviews_t.c.label, reviews_t.c.reviewer, reviews_t.c.source,
                           reviews_t.c.created_at.label("reviewed_at"))
                 .join(reviews_t, reviews_t.c.item_id == items_t.c.id)
                 .order_by(reviews_t.c.created_at, reviews_t.c.id))
        if policy_version is not None:
            query = query.where(items_t.c.policy_version == check_int(policy_version, "policy version"))
        rows = self._rows(query)
        return [
            LabelledItem(
                item_id=row.id, text=row.text, label=row.label, prediction=row.prediction,
                raw_probabilities=json.loads(row.raw_probabilities), confidence=row.confidence,
                decision=row.decision, queue_reason=row.queue_reason, policy_version=row.policy_version,
                reviewer=row.reviewer, reviewed_at=row.reviewed_at, source=row.source, policy_id=row.policy_id,
                external_id=row.external_id, audit_rate=row.audit_rate,
            )
            for row in rows
        ]

    def live_confidences(self, *, policy_version: int | None = None, limit: int | None = None) -> list[float]:
        """Calibrated confidences of stored items, newest first (for the drift check)."""
        query = sa.select(items_t.c.confidence).order_by(items_t.c.created_at.desc(), items_t.c.id.desc())
        if policy_version is not None:
            query = query.where(items_t.c.policy_version == check_int(policy_version, "policy version"))
        if limit is not None:
            query = query.limit(check_int(limit, "limit", minimum=0))
        with self._read() as connection:
            return [float(value) for value in connection.execute(query).scalars()]
