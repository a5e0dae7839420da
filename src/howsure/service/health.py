"""Readiness of the review service: does its database answer, and could it write?

    ready = await database_ready(store)        # never waits longer than READY_TIMEOUT_S
    ready.ok, ready.policy_version, ready.message

``/healthz`` (liveness) answers from the process alone, whatever the database does;
``/readyz`` asks the database here. The probe takes the write lock the way a write does
(SQLite ``BEGIN IMMEDIATE``; PostgreSQL a ``ROW EXCLUSIVE`` lock on the tables a request
writes) and gives it back at once, so a database that another process keeps locked reads as
not ready even though reads would still work. The probe runs on a thread of its own: a full
request thread pool, or a database that hangs, cannot make the probe itself hang.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from howsure.service import db

if TYPE_CHECKING:
    from howsure.service.store import ReviewStore

__all__ = ["Readiness", "ReadyResponse", "database_ready", "probe", "READY_TIMEOUT_S", "RETRY_AFTER_S"]

#: How long the probe may wait for the database's write lock.
PROBE_WAIT_S = 1.0
#: The longest /readyz takes, whatever the database does.
READY_TIMEOUT_S = 3.0
#: What a 503 for an unavailable database tells clients to wait before trying again.
RETRY_AFTER_S = 5

_PROBE_THREAD = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="howsure-ready")


@dataclass(frozen=True)
class Readiness:
    """``ok``: the database answered and its write lock was free; ``policy_version``: the
    active version it reports; ``message``: what failed (empty when ok)."""

    ok: bool
    policy_version: int | None = None
    message: str = ""


class ReadyResponse(BaseModel):
    status: Literal["ready"]
    database: Literal["ok"]
    policy_version: int | None = Field(description="The active policy version the database reports.")


def probe(store: "ReviewStore", wait_s: float = PROBE_WAIT_S) -> Readiness:
    """Take and give back the database's write lock, waiting at most ``wait_s``; read the
    active policy version on the way. Never raises for a database error."""
    try:
        with store.engine.connect() as connection:
            connection = connection.execution_options(sqlite_immediate=True)
            with db.transaction_waiting(connection, wait_s):
                if store.dialect == "postgresql":
                    connection.exec_driver_sql("LOCK TABLE items, reviews IN ROW EXCLUSIVE MODE")
                version = connection.execute(
                    sa.select(db.policies.c.version).where(db.policies.c.active.is_(True))).scalar()
    except (DBAPIError, PoolTimeout) as exc:
        return Readiness(False, message=db.error_summary(exc))
    return Readiness(True, policy_version=version)


async def database_ready(store: "ReviewStore", timeout_s: float = READY_TIMEOUT_S) -> Readiness:
    """`probe` on its own thread, given up after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.run_in_executor(_PROBE_THREAD, probe, store), timeout_s)
    except (asyncio.TimeoutError, TimeoutError):
        return Readiness(False, message=f"the database did not answer within {timeout_s:g} s")
