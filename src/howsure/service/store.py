"""The review store: items, the review queue with leases, reviews, policies, users and tokens,
and the audit log, on SQLite or PostgreSQL.

    from howsure.service.store import ReviewStore, NewItem
    store = ReviewStore("reviews.db")                     # migrates to the newest schema
    store.add_policy(policy.to_dict(), actor="admin")     # version 1, active
    [item] = store.add_items([NewItem(text=..., prediction="positive", confidence=0.7,
                                      probabilities={...}, raw_probabilities={...},
                                      decision="review", queue_reason="review",
                                      policy_version=1, policy_id=policy.policy_id)],
                             actor="api-client")
    claimed = store.claim_next("alice")                   # atomic, with a 300 s lease
    store.submit_review(claimed.id, "alice", "negative")

`ReviewStore` is safe to share between threads: it holds one engine (a connection pool) and
every method is one short transaction. Several processes may share one database: the claim
is atomic on both back ends (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` and
a conditional ``UPDATE`` on SQLite), and the database's UNIQUE constraints make a duplicate
review or a client's duplicate ``request_id`` impossible whatever happens in the code.

A write waits at most ``db.DB_WAIT_S`` (3 s) for a database another process holds locked, then
raises `DatabaseUnavailable`; while it stays locked, later writes fail fast
(`howsure.service.dbwait`).

Errors are typed: `StoreError` for unknown items, users, policy versions and bad values,
`ClaimError` (a `StoreError`) for conflicts with the queue's state, `PolicyError` for a policy
body that does not validate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from howsure.errors import ClaimError, DatabaseUnavailable, StoreError
from howsure.service import db
from howsure.service.db import events as events_t
from howsure.service.db import items as items_t
from howsure.service.db import policies as policies_t
from howsure.service.db import reviews as reviews_t
from howsure.service.db import tokens as tokens_t
from howsure.service.db import users as users_t
from howsure.service.dbwait import WriteGate

__all__ = [
    "ReviewStore", "NewItem", "ItemRecord", "ReviewRecord", "PolicyRecord", "UserRecord",
    "TokenRecord", "EventRecord", "LabelledItem", "TOKEN_PREFIX", "hash_token",
]

TOKEN_PREFIX = "hs_"
# authenticate() writes last_used_at at most this often per token: a busy API client must not
# turn every request into a write transaction.
LAST_USED_RESOLUTION = timedelta(seconds=60)
MAX_NAME_CHARS = 100
MAX_ID_CHARS = 200
# How often a write that lost a race on a UNIQUE constraint (PostgreSQL) is tried again.
WRITE_RETRIES = 5


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class PolicyRecord:
    """One stored policy version. ``body`` is the policy JSON (`howsure.policy.Policy.to_dict`)."""

    version: int
    policy_id: str
    body: dict[str, Any]
    created_at: datetime
    created_by: str
    active: bool
    note: str

    @property
    def labels(self) -> list[str]:
        """The policy's label names, in column order."""
        return list(self.body["labels"])

    def to_policy(self) -> Any:
        """The `howsure.policy.Policy` this record stores."""
        from howsure.policy import Policy

        return Policy.from_dict(self.body)


@dataclass(frozen=True)
class UserRecord:
    """A user of the service. ``role`` is ``admin``, ``reviewer`` or ``client``."""

    id: int
    name: str
    role: str
    disabled: bool


@dataclass(frozen=True)
class TokenRecord:
    """A stored token without its secret: ``hash_prefix`` identifies it for `revoke_token`."""

    id: int
    user_name: str
    hash_prefix: str
    note: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewItem:
    """An item to store: the model's output on ``text`` and the policy's decision.

    ``decision`` is ``"auto"`` or ``"review"``. ``queue_reason`` is ``"review"`` for every
    review decision, ``"audit"`` for an auto item sampled for auditing, else None; items with
    a queue reason are queued for people. ``request_id`` is the client's idempotency key
    (unique per client, the ``actor`` of `ReviewStore.add_items`). ``audit_rate`` is the chance
    an auto item was drawn for audit, kept with auto items (None for review decisions, or
    when unknown): recalibration weights each audited item by its inverse.
    """

    text: str
    prediction: str
    confidence: float
    probabilities: dict[str, float]
    raw_probabilities: dict[str, float]
    decision: str
    queue_reason: str | None
    policy_version: int
    policy_id: str
    external_id: str | None = None
    request_id: str | None = None
    audit_rate: float | None = None


@dataclass(frozen=True)
class ItemRecord:
    """A stored item (one row of ``items``); probabilities are dicts label -> probability."""

    id: int
    request_id: str | None
    external_id: str | None
    text: str
    created_at: datetime
    created_by: str
    policy_version: int
    policy_id: str
    prediction: str
    confidence: float
    probabilities: dict[str, float]
    raw_probabilities: dict[str, float]
    decision: str
    queue_reason: str | None
    status: str
    queued_at: datetime | None
    claimed_by: str | None
    claim_expires_at: datetime | None
    audit_rate: float | None = None


@dataclass(frozen=True)
class ReviewRecord:
    """A person's label for an item. ``source`` is the item's queue reason (review or audit);
    ``policy_version`` the version that decided the item."""

    id: int
    item_id: int
    reviewer: str
    label: str
    created_at: datetime
    policy_version: int
    agreed_with_model: bool
    source: str


@dataclass(frozen=True)
class EventRecord:
    """One entry of the audit log."""

    id: int
    at: datetime
    actor: str
    action: str
    item_id: int | None
    policy_version: int | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelledItem:
    """A reviewed item with its human label: what recalibration and export read.

    ``source`` is ``"review"`` (routed to people because the model was unsure) or ``"audit"``
    (a random sample of the automated items); it equals ``queue_reason``. ``audit_rate`` is
    the chance an audit item was drawn (None when it was not recorded).
    """

    item_id: int
    text: str
    label: str
    prediction: str
    raw_probabilities: dict[str, float]
    confidence: float
    decision: str
    queue_reason: str
    policy_version: int
    reviewer: str
    reviewed_at: datetime
    source: str
    policy_id: str
    external_id: str | None
    audit_rate: float | None = None


def hash_token(token: str) -> str:
    """sha256 hex of a token: what the ``tokens`` table stores.

    A plain hash is enough: the tokens are 256-bit random strings, so there is nothing to
    brute-force, and a slow hash would cost every API request.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------- the store
class ReviewStore:
    """Storage of the review service on SQLite or PostgreSQL.

    Parameters
    ----------
    url : str
        Anything `howsure.service.db.normalise_url` accepts: a SQLite file path, ``sqlite:///``
        or ``postgresql://`` URL.
    migrate : bool
        Run the Alembic migrations up to the newest schema first (safe on an up-to-date
        database and from several processes at once). With False the schema must be current.
    clock : callable returning an aware datetime, optional
        Source of "now" (UTC) for every timestamp and lease; tests pass a fake clock.

    Attributes
    ----------
    url : str
        The normalised URL.
    engine : sqlalchemy.engine.Engine
    dialect : str
        ``"sqlite"`` or ``"postgresql"``.
    """

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

    def __enter__(self) -> "ReviewStore":
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
            policy_version=policy_version, detail=_dumps(detail or {}),
        ))

    # ------------------------------------------------------------------ policies
    def add_policy(self, body: dict[str, Any], *, actor: str, activate: bool = True,
                   note: str = "") -> PolicyRecord:
        """Store a policy as the next version (highest version + 1).

        Parameters
        ----------
        body : dict
            The policy JSON (`howsure.policy.Policy.to_dict`); validated with
            `howsure.policy.Policy.from_dict` (`PolicyError` when invalid). Stored as given,
            with ``policy_id`` filled in when missing.
        actor : str
            Who adds it (audit log).
        activate : bool
            Make it the active policy (the previously active one is deactivated).
        note : str
            Free text kept with the version ("recalibrated from 1,200 reviews").
        """
        from howsure.policy import Policy

        actor = _name(actor, "actor")
        note = _text(note, "note")
        policy = Policy.from_dict(body)
        stored = dict(body)
        stored["policy_id"] = policy.policy_id
        blob = _dumps(stored)

        def insert() -> int:
            with self._write() as connection:
                now = self.now()
                version = (connection.execute(sa.select(sa.func.max(policies_t.c.version))).scalar() or 0) + 1
                previous = self._active_version(connection) if activate else None
                if activate:
                    connection.execute(policies_t.update().where(policies_t.c.active.is_(True)).values(active=False))
                connection.execute(policies_t.insert().values(
                    version=version, policy_id=policy.policy_id, body=blob, created_at=now,
                    created_by=actor, active=activate, note=note,
                ))
                self._event(connection, actor, "policy_added", policy_version=version, at=now,
                            detail={"policy_id": policy.policy_id, "note": note, "active": activate})
                if activate:
                    self._event(connection, actor, "policy_activated", policy_version=version, at=now,
                                detail={"previous_version": previous})
                return version

        return self.get_policy(self._retrying(insert))

    def active_policy(self) -> PolicyRecord | None:
        """The active policy, or None when no policy was added yet."""
        row = self._first(sa.select(policies_t).where(policies_t.c.active.is_(True)))
        return None if row is None else _policy_record(row)

    def get_policy(self, version: int) -> PolicyRecord:
        """The policy stored as ``version``; `StoreError` when there is none."""
        version = _int(version, "policy version")
        row = self._first(sa.select(policies_t).where(policies_t.c.version == version))
        if row is None:
            raise StoreError(f"policy version {version} is not in the store; versions: {self._versions()}")
        return _policy_record(row)

    def policy_history(self) -> list[PolicyRecord]:
        """Every stored policy version, newest first."""
        rows = self._rows(sa.select(policies_t).order_by(policies_t.c.version.desc()))
        return [_policy_record(row) for row in rows]

    def activate_policy(self, version: int, *, actor: str) -> PolicyRecord:
        """Make ``version`` the active policy (a rollback when it is an older one).

        Activating the policy that is already active changes nothing and logs nothing.
        """
        version = _int(version, "policy version")
        actor = _name(actor, "actor")

        def activate() -> None:
            with self._write() as connection:
                row = connection.execute(sa.select(policies_t.c.active).where(policies_t.c.version == version)).first()
                if row is None:
                    raise StoreError(f"policy version {version} is not in the store; versions: {self._versions()}")
                if row.active:
                    return
                previous = self._active_version(connection)
                connection.execute(policies_t.update().where(policies_t.c.active.is_(True)).values(active=False))
                connection.execute(policies_t.update().where(policies_t.c.version == version).values(active=True))
                self._event(connection, actor, "policy_activated", policy_version=version,
                            detail={"previous_version": previous})

        self._retrying(activate)
        return self.get_policy(version)

    @staticmethod
    def _active_version(connection: sa.Connection) -> int | None:
        return connection.execute(sa.select(policies_t.c.version).where(policies_t.c.active.is_(True))).scalar()

    def _versions(self) -> list[int]:
        with self._read() as connection:
            return list(connection.execute(sa.select(policies_t.c.version).order_by(policies_t.c.version)).scalars())

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

    # ------------------------------------------------------------------ users and tokens
    def add_user(self, name: str, role: str, *, actor: str) -> UserRecord:
        """Create a user; `StoreError` if the name is taken or the role unknown."""
        name = _name(name, "user name")
        actor = _name(actor, "actor")
        if role not in db.ROLES:
            raise StoreError(f"unknown role {role!r}; expected one of {list(db.ROLES)}")
        try:
            with self._write() as connection:
                now = self.now()
                connection.execute(users_t.insert().values(name=name, role=role, created_at=now, disabled=False))
                self._event(connection, actor, "user_added", at=now, detail={"name": name, "role": role})
        except IntegrityError:
            raise StoreError(f"user {name!r} already exists") from None
        return self.get_user(name)

    def get_user(self, name: str) -> UserRecord:
        """The user called ``name``; `StoreError` when there is none."""
        row = self._first(sa.select(users_t).where(users_t.c.name == name))
        if row is None:
            raise StoreError(f"no user called {name!r}; add one with `howsure users add`")
        return _user_record(row)

    def list_users(self) -> list[UserRecord]:
        """Every user, by name."""
        rows = self._rows(sa.select(users_t).order_by(users_t.c.name))
        return [_user_record(row) for row in rows]

    def set_user_disabled(self, name: str, disabled: bool, *, actor: str) -> UserRecord:
        """Disable (or enable again) a user: a disabled user's tokens stop authenticating."""
        actor = _name(actor, "actor")
        with self._write() as connection:
            updated = connection.execute(
                users_t.update().where(users_t.c.name == name).values(disabled=bool(disabled))).rowcount
            if not updated:
                raise StoreError(f"no user called {name!r}")
            self._event(connection, actor, "user_disabled" if disabled else "user_enabled", detail={"name": name})
        return self.get_user(name)

    def create_token(self, user_name: str, *, actor: str, note: str = "") -> str:
        """Create an API token for ``user_name`` and return its plaintext.

        The plaintext (``hs_`` + 43 URL-safe characters) is shown once: only its sha256 is
        stored. `StoreError` when the user does not exist.
        """
        actor = _name(actor, "actor")
        note = _text(note, "note")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(token)
        with self._write() as connection:
            user_id = connection.execute(sa.select(users_t.c.id).where(users_t.c.name == user_name)).scalar()
            if user_id is None:
                raise StoreError(f"no user called {user_name!r}; add one with `howsure users add` first")
            now = self.now()
            token_id = connection.execute(tokens_t.insert().values(
                user_id=user_id, token_hash=digest, note=note, created_at=now,
            )).inserted_primary_key[0]
            self._event(connection, actor, "token_created", at=now,
                        detail={"user": user_name, "token_id": token_id, "hash_prefix": digest[:12], "note": note})
        return token

    def authenticate(self, token: str) -> UserRecord | None:
        """The user a token belongs to, or None for an unknown or revoked token or a disabled
        user. Records when the token was last used (at most once a minute)."""
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = hash_token(token)
        row = self._first(
            sa.select(tokens_t.c.id, tokens_t.c.token_hash, tokens_t.c.revoked_at, tokens_t.c.last_used_at,
                      users_t.c.id.label("user_id"), users_t.c.name, users_t.c.role, users_t.c.disabled)
            .join(users_t, users_t.c.id == tokens_t.c.user_id)
            .where(tokens_t.c.token_hash == digest)
        )
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        if row.revoked_at is not None or row.disabled:
            return None
        now = self.now()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            try:
                with self._write() as connection:
                    connection.execute(tokens_t.update().where(tokens_t.c.id == row.id).values(last_used_at=now))
            except DatabaseUnavailable:
                # Bookkeeping only: a locked database must not refuse a request that may
                # only read (the next request records the use).
                pass
        return UserRecord(id=row.user_id, name=row.name, role=row.role, disabled=bool(row.disabled))

    def list_tokens(self, user_name: str | None = None) -> list[TokenRecord]:
        """Stored tokens (never their secrets), oldest first, optionally of one user."""
        query = (sa.select(tokens_t, users_t.c.name.label("user_name"))
                 .join(users_t, users_t.c.id == tokens_t.c.user_id).order_by(tokens_t.c.id))
        if user_name is not None:
            query = query.where(users_t.c.name == user_name)
        rows = self._rows(query)
        return [_token_record(row) for row in rows]

    def revoke_token(self, prefix_or_id: str | int, *, actor: str) -> TokenRecord:
        """Revoke a token given its id, its plaintext, or a prefix (8+ hex digits) of its hash.

        `StoreError` when nothing or more than one token matches, or it is already revoked.
        """
        actor = _name(actor, "actor")
        key = prefix_or_id
        if (isinstance(key, int) and not isinstance(key, bool)) or (isinstance(key, str) and key.isdigit()):
            condition, what = tokens_t.c.id == int(key), f"id {int(key)}"
        elif isinstance(key, str) and key.startswith(TOKEN_PREFIX):
            condition, what = tokens_t.c.token_hash == hash_token(key), "the given plaintext"
        elif isinstance(key, str) and len(key) >= 8 and all(c in "0123456789abcdef" for c in key.lower()):
            condition, what = tokens_t.c.token_hash.startswith(key.lower()), f"hash prefix {key!r}"
        else:
            raise StoreError(f"cannot identify a token by {prefix_or_id!r}; give its id, the token itself "
                             "or at least 8 hex digits of its hash (see list_tokens)")
        with self._write() as connection:
            rows = connection.execute(sa.select(tokens_t.c.id, tokens_t.c.revoked_at).where(condition)).all()
            if not rows:
                raise StoreError(f"no token matches {what}")
            if len(rows) > 1:
                raise StoreError(f"{len(rows)} tokens match {what}; give more digits or the id")
            if rows[0].revoked_at is not None:
                raise StoreError(f"token {rows[0].id} is already revoked (at {rows[0].revoked_at.isoformat()})")
            now = self.now()
            connection.execute(tokens_t.update().where(tokens_t.c.id == rows[0].id).values(revoked_at=now))
            self._event(connection, actor, "token_revoked", at=now, detail={"token_id": rows[0].id})
        return next(t for t in self.list_tokens() if t.id == rows[0].id)

    # ------------------------------------------------------------------ items
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
        actor = _name(actor, "actor")
        items = list(items)
        for position, item in enumerate(items):
            _check_new_item(item, position)
        if not items:
            return []

        def insert() -> list[int]:
            with self._write() as connection:
                now = self.now()
                self._check_item_policies(connection, items)
                request_ids = [item.request_id for item in items if item.request_id is not None]
                known: dict[str, int] = {}
                for chunk in _chunks(sorted(set(request_ids)), 500):
                    rows = connection.execute(
                        sa.select(items_t.c.request_id, items_t.c.id)
                        .where(items_t.c.created_by == actor, items_t.c.request_id.in_(chunk)))
                    known.update({request_id: item_id for request_id, item_id in rows})
                ids: list[int] = []
                for item in items:
                    if item.request_id is not None and item.request_id in known:
                        ids.append(known[item.request_id])
                        continue
                    item_id = connection.execute(items_t.insert().values(_item_row(item, actor, now))) \
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
        item_id = _int(item_id, "item id")
        found = self._items_by_id([item_id])
        if item_id not in found:
            raise StoreError(f"item {item_id} is not in the store")
        return found[item_id]

    def get_review(self, item_id: int) -> ReviewRecord | None:
        """The review of an item, or None when it has none (yet)."""
        item_id = _int(item_id, "item id")
        row = self._first(sa.select(reviews_t).where(reviews_t.c.item_id == item_id))
        return None if row is None else _review_record(row)

    def _items_by_id(self, ids: Sequence[int]) -> dict[int, ItemRecord]:
        out: dict[int, ItemRecord] = {}
        with self._read() as connection:
            for chunk in _chunks(sorted(set(ids)), 500):
                for row in connection.execute(sa.select(items_t).where(items_t.c.id.in_(chunk))):
                    out[row.id] = _item_record(row)
        return out

    # ------------------------------------------------------------------ queue
    def claim_next(self, reviewer: str, *, lease_seconds: float = 300) -> ItemRecord | None:
        """Claim the next item to review for ``reviewer``, or None when the queue is empty.

        If the reviewer already holds an unexpired claim, that item is returned again (a page
        reload does not lose it) and its lease renewed. Otherwise the oldest item that is
        ``queued``, or ``claimed`` with an expired lease (event ``lease_expired``), is taken
        atomically: two reviewers never get the same item. The lease ends ``lease_seconds``
        from now; after that another reviewer may take the item over.
        """
        reviewer = _name(reviewer, "reviewer")
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
        item_id = _int(item_id, "item id")
        reviewer = _name(reviewer, "reviewer")
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
        item_id = _int(item_id, "item id")
        reviewer = _name(reviewer, "reviewer")
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
                self._waiting(self.now()))).scalar_one()

    @staticmethod
    def _waiting(now: datetime) -> Any:
        return sa.or_(items_t.c.status == "queued",
                      sa.and_(items_t.c.status == "claimed", items_t.c.claim_expires_at < now))

    def reviewer_count(self, reviewer: str) -> int:
        """How many reviews ``reviewer`` has submitted."""
        with self._read() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(reviews_t)
                                      .where(reviews_t.c.reviewer == reviewer)).scalar_one()

    # ------------------------------------------------------------------ reading for stats and learning
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
            policy_version = _int(policy_version, "policy version")
        now = self.now()
        i, r = items_t.c, reviews_t.c

        def count(condition: Any) -> Any:
            return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

        item_query = sa.select(
            sa.func.count().label("items"),
            count(i.decision == "auto").label("auto"),
            count(i.decision == "review").label("review"),
            count(i.queue_reason == "audit").label("audit_sampled"),
            count(self._waiting(now)).label("queue_length"),
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
        oldest = _as_datetime(counts.oldest)
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
            query = query.where(items_t.c.policy_version == _int(policy_version, "policy version"))
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
            query = query.where(items_t.c.policy_version == _int(policy_version, "policy version"))
        if limit is not None:
            query = query.limit(_int(limit, "limit", minimum=0))
        with self._read() as connection:
            return [float(value) for value in connection.execute(query).scalars()]

    def events(self, *, item_id: int | None = None, action: str | None = None,
               limit: int | None = 100) -> list[EventRecord]:
        """The audit log, newest first, optionally of one item and/or one action."""
        query = sa.select(events_t).order_by(events_t.c.id.desc())
        if item_id is not None:
            query = query.where(events_t.c.item_id == _int(item_id, "item id"))
        if action is not None:
            query = query.where(events_t.c.action == action)
        if limit is not None:
            query = query.limit(_int(limit, "limit", minimum=0))
        rows = self._rows(query)
        return [EventRecord(id=row.id, at=row.at, actor=row.actor, action=row.action, item_id=row.item_id,
                            policy_version=row.policy_version, detail=json.loads(row.detail)) for row in rows]


# ---------------------------------------------------------------------------- helpers
def _dumps(value: Any) -> str:
    # Key order is meaning here: a task's labels and an item's probabilities are in label order,
    # and a policy whose task labels come back reordered no longer validates.
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot store {type(value).__name__} as JSON: {exc}") from None


def _as_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value))
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise StoreError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_CHARS:
        raise StoreError(f"{what} {value[:20]!r}... is {len(value)} characters; at most {MAX_NAME_CHARS}")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise StoreError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    return value


def _int(value: Any, what: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StoreError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_probabilities(value: Any, what: str) -> None:
    if not isinstance(value, dict) or not value:
        raise StoreError(f"{what} must be a non-empty dict label -> probability, got {value!r}")
    for label, p in value.items():
        if not isinstance(label, str) or isinstance(p, bool) or not isinstance(p, (int, float)) \
                or not math.isfinite(p) or not 0 <= p <= 1:
            raise StoreError(f"{what}: {label!r} -> {p!r} is not a label with a probability in [0, 1]")


def _check_new_item(item: Any, position: int) -> None:
    where = f"item {position}"
    if not isinstance(item, NewItem):
        raise StoreError(f"{where} must be a NewItem, got {type(item).__name__}")
    if not isinstance(item.text, str):
        raise StoreError(f"{where}: text must be a string, got {type(item.text).__name__}")
    if item.decision not in db.DECISIONS:
        raise StoreError(f"{where}: decision {item.decision!r} is not one of {list(db.DECISIONS)}")
    expected = ("review",) if item.decision == "review" else (None, "audit")
    if item.queue_reason not in expected:
        raise StoreError(f"{where}: a {item.decision!r} decision needs queue_reason in {list(expected)}, "
                         f"got {item.queue_reason!r}")
    if isinstance(item.confidence, bool) or not isinstance(item.confidence, (int, float)) \
            or not math.isfinite(item.confidence) or not 0 <= item.confidence <= 1:
        raise StoreError(f"{where}: confidence must be a number in [0, 1], got {item.confidence!r}")
    _check_probabilities(item.probabilities, f"{where} probabilities")
    _check_probabilities(item.raw_probabilities, f"{where} raw_probabilities")
    _int(item.policy_version, f"{where} policy_version")
    rate = item.audit_rate
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                             or not math.isfinite(rate) or not 0 <= rate <= 1):
        raise StoreError(f"{where}: audit_rate must be null or a number in [0, 1], got {rate!r}")
    if item.queue_reason == "audit" and rate is not None and rate == 0:
        raise StoreError(f"{where}: an item queued for audit cannot have been drawn at audit_rate 0")
    for name in ("request_id", "external_id"):
        value = getattr(item, name)
        if value is not None and (not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS):
            raise StoreError(f"{where}: {name} must be null or a string of 1 to {MAX_ID_CHARS} characters, "
                             f"got {value!r}")


def _item_row(item: NewItem, actor: str, now: datetime) -> dict[str, Any]:
    queued = item.queue_reason is not None
    return {
        "request_id": item.request_id, "external_id": item.external_id, "text": item.text,
        "created_at": now, "created_by": actor, "policy_version": item.policy_version,
        "policy_id": item.policy_id, "prediction": item.prediction, "confidence": float(item.confidence),
        "probabilities": _dumps(item.probabilities), "raw_probabilities": _dumps(item.raw_probabilities),
        "decision": item.decision, "queue_reason": item.queue_reason,
        "status": "queued" if queued else "done", "queued_at": now if queued else None,
        "audit_rate": None if item.audit_rate is None else float(item.audit_rate),
    }


def _item_record(row: Any) -> ItemRecord:
    return ItemRecord(
        id=row.id, request_id=row.request_id, external_id=row.external_id, text=row.text,
        created_at=row.created_at, created_by=row.created_by, policy_version=row.policy_version,
        policy_id=row.policy_id, prediction=row.prediction, confidence=float(row.confidence),
        probabilities=json.loads(row.probabilities), raw_probabilities=json.loads(row.raw_probabilities),
        decision=row.decision, queue_reason=row.queue_reason, status=row.status, queued_at=row.queued_at,
        claimed_by=row.claimed_by, claim_expires_at=row.claim_expires_at, audit_rate=row.audit_rate,
    )


def _review_record(row: Any) -> ReviewRecord:
    return ReviewRecord(id=row.id, item_id=row.item_id, reviewer=row.reviewer, label=row.label,
                        created_at=row.created_at, policy_version=row.policy_version,
                        agreed_with_model=bool(row.agreed_with_model), source=row.source)


def _policy_record(row: Any) -> PolicyRecord:
    return PolicyRecord(version=row.version, policy_id=row.policy_id, body=json.loads(row.body),
                        created_at=row.created_at, created_by=row.created_by, active=bool(row.active),
                        note=row.note)


def _user_record(row: Any) -> UserRecord:
    return UserRecord(id=row.id, name=row.name, role=row.role, disabled=bool(row.disabled))


def _token_record(row: Any) -> TokenRecord:
    return TokenRecord(id=row.id, user_name=row.user_name, hash_prefix=row.token_hash[:12], note=row.note,
                       created_at=row.created_at, last_used_at=row.last_used_at, revoked_at=row.revoked_at)
