"""Reading the audit log (every write logs its event through `StoreBase._event`)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from howsure.service.db import events as events_t
from howsure.service.store.base import StoreBase
from howsure.service.store.records import EventRecord
from howsure.service.store.validation import check_int

__all__ = ["EventLog"]


class EventLog(StoreBase):
    """The events table, newest first."""

    def events(self, *, item_id: int | None = None, action: str | None = None,
               limit: int | None = 100) -> list[EventRecord]:
        """The audit log, newest first, optionally of one item and/or one action."""
        query = sa.select(events_t).order_by(events_t.c.id.desc())
        if item_id is not None:
            query = query.where(events_t.c.item_id == check_int(item_id, "item id"))
        if action is not None:
            query = query.where(events_t.c.action == action)
        if limit is not None:
            query = query.limit(check_int(limit, "limit", minimum=0))
        rows = self._rows(query)
        return [EventRecord(id=row.id, at=row.at, actor=row.actor, action=row.action, item_id=row.item_id,
                            policy_version=row.policy_version, detail=json.loads(row.detail)) for row in rows]
