"""Storing classified items (one transaction per batch, idempotent per client ``request_id``)
and reading items and their reviews back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from howsure.errors import StoreError
from howsure.service.db import items as items_t, policies as policies_t, reviews as reviews_t
from howsure.service.store.base import StoreBase, chunks, dumps
from howsure.service.store.records import ItemRecord, NewItem, ReviewRecord, item_record, review_record
from howsure.service.store.validation import check_int, check_name, check_new_item

__all__ = ["ItemStore"]


class ItemStore(StoreBase):
    """The items table, and one item's review."""

    def add_items(self, items: Sequence[NewItem], *, actor: str) -> list[ItemRecord]:
        """Store classified items in ONE transaction and return their records, in order.

        An item whose ``request_id`` this ``actor`` already stored (a client retrying after a
        crash or a timeout) is not inserted again: its stored record is returned instead. Keys
        are per client: another actor's item with the same key is not this one. Items with a
        ``queue_reason`` are queued for review (status ``queued``), the others are ``done``.
        Every item gets a ``classify`` event.

        Raises
        ------
        StoreError
            A bad field (naming the item's position and the value), or a policy version that
            is not stored or whose policy_id differs.
        """
        actor = check_name(actor, "actor")
        items = list(items)
        for position, item in enumerate(items):
            check_new_item(item, position)
        if not items:
            return []

        def insert() -> list[int]:
            with self._write() as connection:
                now = self.now()
                self._check_item_policies(connection, items)
                request_ids = [item.request_id for item in items if item.request_id is not None]
                known: dict[str, int] = {}
                for chunk in chunks(sorted(set(request_ids)), 500):
                    rows = connection.execute(
                        sa.select(items_t.c.request_id, items_t.c.id)
                        .where(items_t.c.created_by == actor, items_t.c.request_id.in_(chunk)))
                    known.update({request_id: item_id for request_id, item_id in rows})
                ids: list[int] = []
                for item in items:
                    if item.request_id is not None and item.request_id in known:
                        ids.append(known[item.request_id])
                        continue
                    item_id = connection.execute(items_t.insert().values(item_row(item, actor, now))) \
                        .inserted_primary_key[0]
                    if item.request_id is not None:
                        known[item.request_id] = item_id  # the same key twice in one batch
                    ids.append(item_id)
                    self._event(connection, actor, "classify", item_id=item_id, policy_version=item.policy_version,
                                at=now, detail={"decision": item.decision, "queue_reason": item.queue_reason,
                                                "prediction": item.prediction, "confidence": item.confidence})
                return ids

        # A concurrent request with the same request_id makes our insert fail on the UNIQUE
        # constraint (PostgreSQL); trying again then finds its row.
        ids = self._retrying(insert)
        records = self._items_by_id(ids)
        return [records[item_id] for item_id in ids]

    def _check_item_policies(self, connection: sa.Connection, items: list[NewItem]) -> None:
        for version in sorted({item.policy_version for item in items}):
            row = connection.execute(sa.select(policies_t.c.policy_id).where(policies_t.c.version == version)).first()
            if row is None:
                raise StoreError(f"items name policy version {version}, which is not in the store")
            labels = self._policy_labels(connection, version)
            for position, item in enumerate(items):
                if item.policy_version != version:
                    continue
                if item.policy_id != row.policy_id:
                    raise StoreError(f"item {position}: policy_id {item.policy_id!r} is not the id of policy "
                                     f"version {version} ({row.policy_id!r})")
                if item.prediction not in labels:
                    raise StoreError(f"item {position}: prediction {item.prediction!r} is not one of the labels "
                                     f"{list(labels)} of policy version {version}")

    def get_item(self, item_id: int) -> ItemRecord:
        """The item with this id; `StoreError` when there is none."""
        item_id = check_int(item_id, "item id")
        found = self._items_by_id([item_id])
        if item_id not in found:
            raise StoreError(f"item {item_id} is not in the store")
        return found[item_id]

    def get_review(self, item_id: int) -> ReviewRecord | None:
        """The review of an item, or None when it has none (yet)."""
        item_id = check_int(item_id, "item id")
        row = self._first(sa.select(reviews_t).where(reviews_t.c.item_id == item_id))
        return None if row is None else review_record(row)

    def _items_by_id(self, ids: Sequence[int]) -> dict[int, ItemRecord]:
        out: dict[int, ItemRecord] = {}
        with self._read() as connection:
            for chunk in chunks(sorted(set(ids)), 500):
                for row in connection.execute(sa.select(items_t).where(items_t.c.id.in_(chunk))):
                    out[row.id] = item_record(row)
        return out


def item_row(item: NewItem, actor: str, now: datetime) -> dict[str, Any]:
    queued = item.queue_reason is not None
    return {
        "request_id": item.request_id, "external_id": item.external_id, "text": item.text,
        "created_at": now, "created_by": actor, "policy_version": item.policy_version,
        "policy_id": item.policy_id, "prediction": item.prediction, "confidence": float(item.confidence),
        "probabilities": dumps(item.probabilities), "raw_probabilities": dumps(item.raw_probabilities),
        "decision": item.decision, "queue_reason": item.queue_reason,
        "status": "queued" if queued else "done", "queued_at": now if queued else None,
        "audit_rate": None if item.audit_rate is None else float(item.audit_rate),
    }
