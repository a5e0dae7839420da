"""The review store: items, the review queue with leases, reviews, policies, users and tokens,
and the audit log, on SQLite or PostgreSQL. One class per group of tables (policies, users,
items, queue, stats, events) over `StoreBase` (engine and transactions), composed here.

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

from howsure.service.store.base import StoreBase
from howsure.service.store.events import EventLog
from howsure.service.store.policies import PolicyStore
from howsure.service.store.queue import QueueStore
from howsure.service.store.records import (
    TOKEN_PREFIX,
    EventRecord,
    ItemRecord,
    LabelledItem,
    NewItem,
    PolicyRecord,
    ReviewRecord,
    TokenRecord,
    UserRecord,
    hash_token,
)
from howsure.service.store.stats import StatsStore
from howsure.service.store.users import UserStore

__all__ = [
    "ReviewStore", "NewItem", "ItemRecord", "ReviewRecord", "PolicyRecord", "UserRecord",
    "TokenRecord", "EventRecord", "LabelledItem", "TOKEN_PREFIX", "hash_token",
]


class ReviewStore(PolicyStore, UserStore, QueueStore, StatsStore, EventLog, StoreBase):
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
