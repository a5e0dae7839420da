"""The review queue: claim the next item under a lease (atomic on SQLite and PostgreSQL), submit
a review, skip (release) an item, and the queue's length."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from howsure.errors import ClaimError, StoreError
from howsure.service.db import items as items_t, reviews as reviews_t
from howsure.service.store.base import WRITE_RETRIES, waiting
from howsure.service.store.items import ItemStore
from howsure.service.store.records import ItemRecord, ReviewRecord
from howsure.service.store.validation import check_int, check_name

__all__ = ["QueueStore"]


class QueueStore(ItemStore):
    """Leases on queued items and the reviews people submit. Built on `ItemStore`: a claim
    hands back the claimed item's record."""

    def claim_next(self, reviewer: str, *, lease_seconds: float = 300) -> ItemRecord | None:
        """Claim the next item to review for ``reviewer``, or None when the queue is empty.

        If the reviewer already holds an unexpired claim, that item is returned again (a page
        reload does not lose it) and its lease renewed. Otherwise the oldest item that is
        ``queued``, or ``claimed`` with an expired lease (event ``lease_expired``), is taken
        atomically: two reviewers never get the same item. The lease ends ``lease_seconds``
        from now; after that another reviewer may take the item over.
        """
        reviewer = check_name(reviewer, "reviewer")
        if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, (int, float)) \
                or not math.isfinite(lease_seconds) or lease_seconds <= 0:
            raise StoreError(f"lease_seconds must be a positive number of seconds, got {lease_seconds!r}")
        lease = timedelta(seconds=lease_seconds)
        with self._write() as connection:
            now = self.now()
            own = connection.execute(
                sa.select(items_t.c.id)
                .where(items_t.c.status == "claimed", items_t.c.claimed_by == reviewer,
                       items_t.c.claim_expires_at > now)
                .order_by(items_t.c.queued_at, items_t.c.id).limit(1)
            ).scalar()
            if own is not None:
                connection.execute(items_t.update().where(items_t.c.id == own)
                                   .values(claim_expires_at=now + lease))
                item_id = own
            else:
                item_id = self._take_next(connection, reviewer, now, lease)
                if item_id is None:
                    return None
        return self.get_item(item_id)

    def _take_next(self, connection: sa.Connection, reviewer: str, now: datetime,
                   lease: timedelta) -> int | None:
        claimable = sa.or_(items_t.c.status == "queued",
                           sa.and_(items_t.c.status == "claimed", items_t.c.claim_expires_at < now))
        query = (sa.select(items_t.c.id, items_t.c.status, items_t.c.claimed_by, items_t.c.policy_version)
                 .where(claimable).order_by(items_t.c.queued_at, items_t.c.id).limit(1))
        if self.dialect == "postgresql":
            # Rows another transaction is claiming right now are skipped, not waited for, so
            # concurrent reviewers each get a different item without blocking each other.
            query = query.with_for_update(skip_locked=True)
        # On SQLite this transaction holds the write lock (BEGIN IMMEDIATE): nobody can change
        # the row between the SELECT and the UPDATE. The UPDATE still repeats the condition, so
        # a lost race shows as rowcount 0 and we look again instead of taking a taken item.
        for _ in range(WRITE_RETRIES):
            row = connection.execute(query).first()
            if row is None:
                return None
            taken = connection.execute(
                items_t.update().where(items_t.c.id == row.id, claimable)
                .values(status="claimed", claimed_by=reviewer, claim_expires_at=now + lease)
            ).rowcount
            if taken != 1:
                continue
            if row.status == "claimed":
                self._event(connection, reviewer, "lease_expired", item_id=row.id,
                            policy_version=row.policy_version, at=now, detail={"previous_holder": row.claimed_by})
            self._event(connection, reviewer, "claim", item_id=row.id, policy_version=row.policy_version, at=now,
                        detail={"lease_seconds": lease.total_seconds()})
            return row.id
        raise StoreError(f"could not claim an item for {reviewer!r} after {WRITE_RETRIES} tries; try again")

    def submit_review(self, item_id: int, reviewer: str, label: str) -> ReviewRecord:
        """Record ``reviewer``'s ``label`` for a claimed item and mark it reviewed.

        Accepted when the reviewer holds the claim, also after the lease expired as long as
        nobody took the item over. One transaction writes the review, the item's status and
        the ``review`` event.

        Raises
        ------
        StoreError
            Unknown item, or a label that is not one of the item's policy labels.
        ClaimError
            The item is already reviewed, claimed by someone else (also: its expired lease was
            taken over), or not claimed at all.
        """
        item_id = check_int(item_id, "item id")
        reviewer = check_name(reviewer, "reviewer")
        try:
            with self._write() as connection:
                now = self.now()
                row = self._lock_item(connection, item_id)
                labels = self._policy_labels(connection, row.policy_version)
                if label not in labels:
                    raise StoreError(f"label {label!r} is not one of the labels {list(labels)} of item {item_id}")
                self._check_holder(row, item_id, reviewer, "review")
                source = row.queue_reason or "review"
                review_id = connection.execute(reviews_t.insert().values(
                    item_id=item_id, reviewer=reviewer, label=label, created_at=now,
                    policy_version=row.policy_version, agreed_with_model=label == row.prediction, source=source,
                )).inserted_primary_key[0]
                connection.execute(items_t.update().where(items_t.c.id == item_id)
                                   .values(status="reviewed", claim_expires_at=None))
                self._event(connection, reviewer, "review", item_id=item_id, policy_version=row.policy_version, at=now,
                            detail={"label": label, "prediction": row.prediction, "source": source,
                                    "agreed_with_model": label == row.prediction})
        except IntegrityError:
            # Only reachable if the row lock above did not serialise two reviews of one item.
            raise ClaimError(f"item {item_id} is already reviewed") from None
        return ReviewRecord(id=review_id, item_id=item_id, reviewer=reviewer, label=label, created_at=now,
                            policy_version=row.policy_version, agreed_with_model=label == row.prediction,
                            source=source)

    def release(self, item_id: int, reviewer: str) -> ItemRecord:
        """Skip: give a claimed item back to the end of the queue (event ``skip``).

        `ClaimError` when ``reviewer`` does not hold the item's claim.
        """
        item_id = check_int(item_id, "item id")
        reviewer = check_name(reviewer, "reviewer")
        with self._write() as connection:
            now = self.now()
            row = self._lock_item(connection, item_id)
            self._check_holder(row, item_id, reviewer, "skip")
            connection.execute(items_t.update().where(items_t.c.id == item_id).values(
                status="queued", claimed_by=None, claim_expires_at=None, queued_at=now))
            self._event(connection, reviewer, "skip", item_id=item_id, policy_version=row.policy_version, at=now)
        return self.get_item(item_id)

    def _lock_item(self, connection: sa.Connection, item_id: int) -> Any:
        query = sa.select(items_t.c.status, items_t.c.claimed_by, items_t.c.claim_expires_at,
                          items_t.c.policy_version, items_t.c.prediction, items_t.c.queue_reason) \
            .where(items_t.c.id == item_id)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        row = connection.execute(query).first()
        if row is None:
            raise StoreError(f"item {item_id} is not in the store")
        return row

    @staticmethod
    def _check_holder(row: Any, item_id: int, reviewer: str, what: str) -> None:
        item = f"item {item_id}"
        if row.status == "reviewed":
            raise ClaimError(f"cannot {what} {item}: it is already reviewed")
        if row.status == "done":
            raise ClaimError(f"cannot {what} {item}: it was decided automatically and is not in the review queue")
        if row.status == "queued":
            raise ClaimError(f"cannot {what} {item}: it is not claimed by {reviewer!r} (claim it first; "
                             "a lease that expired may have been given back to the queue)")
        if row.claimed_by != reviewer:
            raise ClaimError(f"cannot {what} {item}: it is claimed by another reviewer, not {reviewer!r} "
                             "(if it was yours, your lease expired and it was taken over)")

    def queue_length(self) -> int:
        """Items waiting to be claimed: queued, or claimed with an expired lease."""
        with self._read() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(items_t).where(
                waiting(self.now()))).scalar_one()

    def reviewer_count(self, reviewer: str) -> int:
        """How many reviews ``reviewer`` has submitted."""
        with self._read() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(reviews_t)
                                      .where(reviews_t.c.reviewer == reviewer)).scalar_one()
