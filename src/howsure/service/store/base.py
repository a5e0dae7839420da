"""The store's plumbing shared by every part: the engine, the schema check, the clock, read and
write transactions with the write gate (`howsure.service.dbwait`), retries of writes that lost a
UNIQUE race, the audit-log insert, and the JSON and row helpers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from howsure.errors import DatabaseUnavailable, StoreError
from howsure.service import db
from howsure.service.db import events as events_t, items as items_t, policies as policies_t
from howsure.service.dbwait import WriteGate

__all__ = ["StoreBase", "WRITE_RETRIES", "dumps", "as_datetime", "chunks", "waiting"]

# How often a write that lost a race on a UNIQUE constraint (PostgreSQL) is tried again.
WRITE_RETRIES = 5


class StoreBase:
    """The engine, the clock and the transactions every part of `ReviewStore` runs its
    statements in (see `howsure.service.store.ReviewStore` for the parameters)."""

    def __init__(self, url: str, *, migrate: bool = True,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.url = db.normalise_url(url)
        self.engine: Engine = db.make_engine(self.url)
        self.dialect: str = self.engine.dialect.name
        self._clock = clock or db.utcnow
        # SQLite has one writer at a time: threads of this process queue on a lock instead of
        # polling in SQLite's busy handler (other processes still wait through busy_timeout).
        # Either wait ends after db.DB_WAIT_S: a locked database answers 503, it does not stall.
        self._gate = WriteGate(db.DB_WAIT_S, serialise=self.dialect == "sqlite")
        self._labels_cache: dict[int, tuple[str, ...]] = {}
        try:
            if migrate:
                db.upgrade(self.engine)
            else:
                self._check_schema()
        except BaseException:
            self.engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"ReviewStore({db.safe_url(self.engine)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection. The store must not be used afterwards."""
        self.engine.dispose()

    def _check_schema(self) -> None:
        from alembic.script import ScriptDirectory

        try:
            current = db.current_revision(self.engine)
        except DBAPIError as exc:
            raise StoreError(f"cannot open database {db.safe_url(self.engine)}: {db.error_summary(exc)}") from exc
        with self.engine.connect() as connection:
            head = ScriptDirectory.from_config(db.alembic_config(connection)).get_current_head()
        if current != head:
            raise StoreError(
                f"database {db.safe_url(self.engine)} is at schema revision {current!r}, this howsure "
                f"needs {head!r}; open it with migrate=True to upgrade"
            )

    # ------------------------------------------------------------------ transactions
    def now(self) -> datetime:
        """The store's current time (aware, UTC)."""
        value = self._clock()
        if value.tzinfo is None:
            raise StoreError(f"the store's clock returned a naive datetime {value!r}; it must be aware")
        return value.astimezone(timezone.utc)

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect() as connection, db.transaction_waiting(connection, self._gate.read_wait()):
                yield connection
        except (DBAPIError, PoolTimeout) as exc:
            raise self._wrap(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction; on SQLite it holds the write lock from its first statement.
        It waits at most db.DB_WAIT_S for locks in all (`howsure.service.dbwait`)."""
        try:
            with self._gate.hold() as remaining, self.engine.connect() as connection:
                connection = connection.execution_options(sqlite_immediate=True)
                with db.transaction_waiting(connection, remaining()):
                    yield connection
        except IntegrityError:
            raise  # the caller knows which constraint it may have hit
        except (DBAPIError, PoolTimeout) as exc:
            raise self._wrap(exc) from exc

    def _first(self, query: Any) -> Any:
        """The first row of a read-only query (None when there is none)."""
        with self._read() as connection:
            return connection.execute(query).first()

    def _rows(self, query: Any) -> list[Any]:
        """Every row of a read-only query."""
        with self._read() as connection:
            return list(connection.execute(query).all())

    def _retrying(self, operation: Callable[[], Any]) -> Any:
        """Run a write, again when it lost a race for a UNIQUE value to a concurrent writer."""
        for attempt in range(WRITE_RETRIES):
            try:
                return operation()
            except IntegrityError as exc:
                if attempt == WRITE_RETRIES - 1:
                    raise StoreError(f"write kept conflicting with concurrent writers: {db.error_summary(exc)}") from exc
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _wrap(self, exc: Exception) -> DatabaseUnavailable:
        return DatabaseUnavailable(f"database error on {db.safe_url(self.engine)}: {db.error_summary(exc)}")

    def _event(self, connection: sa.Connection, actor: str, action: str, *, item_id: int | None = None,
               policy_version: int | None = None, detail: dict[str, Any] | None = None,
               at: datetime | None = None) -> None:
        connection.execute(events_t.insert().values(
            at=at or self.now(), actor=actor, action=action, item_id=item_id,
            policy_version=policy_version, detail=dumps(detail or {}),
        ))

    def _policy_labels(self, connection: sa.Connection, version: int) -> tuple[str, ...]:
        # Stored policy versions never change, so their labels can be cached for good.
        labels = self._labels_cache.get(version)
        if labels is None:
            body = connection.execute(sa.select(policies_t.c.body).where(policies_t.c.version == version)).scalar()
            if body is None:
                raise StoreError(f"policy version {version} is not in the store")
            labels = tuple(json.loads(body)["labels"])
            self._labels_cache[version] = labels
        return labels


def dumps(value: Any) -> str:
    # Key order is meaning here: a task's labels and an item's probabilities are in label order,
    # and a policy whose task labels come back reordered no longer validates.
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot store {type(value).__name__} as JSON: {exc}") from None


def as_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value))
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def waiting(now: datetime) -> Any:
    """Items waiting to be claimed at ``now``: queued, or claimed with an expired lease."""
    return sa.or_(items_t.c.status == "queued",
                  sa.and_(items_t.c.status == "claimed", items_t.c.claim_expires_at < now))
