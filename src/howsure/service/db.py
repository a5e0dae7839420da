"""Database layer of the review service: table definitions, engine set-up, migrations.

    from howsure.service.db import normalise_url, make_engine, upgrade
    url = normalise_url("reviews.db")         # -> "sqlite:////abs/path/reviews.db"
    engine = make_engine(url)                 # SQLite: WAL, foreign keys, 3 s busy timeout, file 0600
    upgrade(engine)                           # Alembic "upgrade head"

Two back ends are supported: a SQLite file (the embedded default, one machine) and PostgreSQL
through psycopg 3 (several workers and reviewers). The schema is created only by the Alembic
revisions in ``migrations/versions``; `metadata` below mirrors it for queries and is checked
against the migrated database by the tests (what ``alembic check`` does), so the two cannot
drift apart silently. A schema change is a new revision plus the same change here; a revision,
once released, is never edited (it must create the same tables forever).

All timestamps are stored in UTC. SQLite has no time zone type, so `UTCDateTime` stores naive
UTC there and hands back aware datetimes on both back ends.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from howsure.errors import StoreError

__all__ = [
    "ROLES", "DECISIONS", "QUEUE_REASONS", "STATUSES", "SOURCES", "TABLES", "UTCDateTime", "metadata",
    "users", "tokens", "policies", "items", "reviews", "events", "sessions", "normalise_url", "make_engine",
    "upgrade", "downgrade", "current_revision", "safe_url", "utcnow", "DB_WAIT_S", "MIGRATION_WAIT_S",
]

ROLES = ("admin", "reviewer", "client")
DECISIONS = ("auto", "review")
QUEUE_REASONS = ("review", "audit")
STATUSES = ("done", "queued", "claimed", "reviewed")
SOURCES = ("review", "audit")

# How long a request waits for a database another writer holds (SQLite's busy timeout,
# PostgreSQL's lock_timeout) before it gives up with DatabaseUnavailable (503 + Retry-After):
# a locked database must not pile requests up for minutes. Migrations run at start-up, off the
# request path, and wait longer for each other. SQLite's busy handler is not fair (a waiting
# process polls, and others may take the lock between its polls), so a busy database with
# several writing processes needs some slack here too.
DB_WAIT_S = 3.0
#: Pooled SQLite connections kept open: anyio's default worker-thread limit.
SQLITE_POOL_SIZE = 40
MIGRATION_WAIT_S = 60.0
POSTGRES_CONNECT_TIMEOUT_S = 5
ACCEPTED_URLS = (
    "a SQLite file path (reviews.db), sqlite:///path/to/file.db, "
    "postgresql://user:password@host:port/database (or postgres://, postgresql+psycopg://)"
)


class UTCDateTime(sa.TypeDecorator):
    """A timezone-aware UTC datetime on both back ends.

    PostgreSQL keeps ``timestamptz``. SQLite stores the naive UTC time as SQLAlchemy's fixed
    width text (``YYYY-MM-DD HH:MM:SS.ffffff``), so comparing two stored values, or a stored value
    with a bound parameter of this type, orders them correctly.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise StoreError(f"expected a datetime, got {type(value).__name__} {value!r}")
        if value.tzinfo is None:
            raise StoreError(f"naive datetime {value.isoformat()} given; the store needs aware (UTC) times")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


metadata = sa.MetaData()

# The tables below must match migrations/versions exactly (tests/service/test_migrations.py
# compares them). JSON is stored as text so that every back end and every reader sees the same.
users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.CheckConstraint(_in("role", ROLES), name="ck_users_role"),
    sa.UniqueConstraint("name", name="uq_users_name"),
)

tokens = sa.Table(
    "tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", name="fk_tokens_user_id"), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
)

policies = sa.Table(
    "policies", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("policy_id", sa.String(64), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(100), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.UniqueConstraint("version", name="uq_policies_version"),
    # At most one row with active = true: the database, not the code, keeps it unique.
    sa.Index("uq_policies_one_active", "active", unique=True,
             sqlite_where=sa.text("active"), postgresql_where=sa.text("active")),
)

items = sa.Table(
    "items", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("request_id", sa.String(200), nullable=True),
    sa.Column("external_id", sa.String(200), nullable=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(100), nullable=False),
    sa.Column("policy_version", sa.Integer,
              sa.ForeignKey("policies.version", name="fk_items_policy_version"), nullable=False),
    sa.Column("policy_id", sa.String(64), nullable=False),
    sa.Column("prediction", sa.String(200), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("probabilities", sa.Text, nullable=False),
    sa.Column("raw_probabilities", sa.Text, nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("queue_reason", sa.String(16), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("queued_at", UTCDateTime, nullable=True),
    sa.Column("claimed_by", sa.String(100), nullable=True),
    sa.Column("claim_expires_at", UTCDateTime, nullable=True),
    sa.CheckConstraint(_in("decision", DECISIONS), name="ck_items_decision"),
    sa.CheckConstraint(f"queue_reason IS NULL OR {_in('queue_reason', QUEUE_REASONS)}", name="ck_items_queue_reason"),
    sa.CheckConstraint(_in("status", STATUSES), name="ck_items_status"),
    # The chance an auto item was drawn for audit when it was decided (revision 0004); None
    # for review decisions and for items stored before the service recorded it.
    sa.Column("audit_rate", sa.Float, nullable=True),
    # A request_id is the idempotency key of one client (revision 0003): two clients may
    # use the same key.
    sa.UniqueConstraint("created_by", "request_id", name="uq_items_created_by_request_id"),
    sa.Index("ix_items_status_queued_at", "status", "queued_at"),
    sa.Index("ix_items_policy_version", "policy_version"),
)

reviews = sa.Table(
    "reviews", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # UNIQUE: an item can be reviewed once, whatever the application code does.
    sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id", name="fk_reviews_item_id"),
              nullable=False),
    sa.Column("reviewer", sa.String(100), nullable=False),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("policy_version", sa.Integer, nullable=False),
    sa.Column("agreed_with_model", sa.Boolean, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.CheckConstraint(_in("source", SOURCES), name="ck_reviews_source"),
    sa.UniqueConstraint("item_id", name="uq_reviews_item_id"),
    sa.Index("ix_reviews_reviewer", "reviewer"),
)

events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    # No foreign key: the audit log must never stop an operation or be cascaded away.
    sa.Column("item_id", sa.Integer, nullable=True),
    sa.Column("policy_version", sa.Integer, nullable=True),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    sa.Index("ix_events_item_id", "item_id"),
)

# Signed-in review-page sessions (revision 0002): the cookie names a row here, so signing out,
# revoking the token or disabling the user ends the session in every process at once.
sessions = sa.Table(
    "sessions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("session_hash", sa.String(64), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", name="fk_sessions_user_id"), nullable=False),
    sa.Column("token_id", sa.Integer, sa.ForeignKey("tokens.id", name="fk_sessions_token_id"), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("session_hash", name="uq_sessions_session_hash"),
    sa.Index("ix_sessions_expires_at", "expires_at"),
)

TABLES = ("users", "tokens", "policies", "items", "reviews", "events", "sessions")


# ---------------------------------------------------------------------------- URLs and engines
def require_existing(url: str) -> str:
    """``normalise_url(url)``, refusing a SQLite file that does not exist yet: for commands that
    only read or change what a store holds, where opening a mistyped path would create an empty
    store (and, for an export, overwrite the output with nothing). PostgreSQL URLs pass as they
    are; a missing server or database is reported when connecting."""
    normalised = normalise_url(url)
    if normalised.split("://", 1)[0].lower().startswith("sqlite"):
        path = Path(normalised.split("://", 1)[1][1:].split("?", 1)[0])
        if not path.is_file():
            raise StoreError(f"no review database at {str(path)!r} (from --db {url!r}); check the path "
                             "(`howsure serve --db` creates one)")
    return normalised


def normalise_url(url: str) -> str:
    """Turn what a user typed into a SQLAlchemy URL.

    Parameters
    ----------
    url : str
        ``sqlite:///path.db`` (kept as is), a bare file path such as ``reviews.db`` (made
        absolute: ``sqlite:////abs/reviews.db``), or ``postgresql://...`` / ``postgres://...`` /
        ``postgresql+psycopg://...`` (all served by psycopg 3).

    Returns
    -------
    str

    Raises
    ------
    StoreError
        For anything else, naming the URL (password hidden) and the accepted forms. In-memory
        SQLite is refused: each connection would see its own empty database.
    """
    if not isinstance(url, str) or not url.strip():
        raise StoreError(f"database URL must be a non-empty string, got {url!r}; accepted: {ACCEPTED_URLS}")
    url = url.strip()
    if "://" not in url:
        if url == ":memory:":
            raise StoreError(f"in-memory SQLite {url!r} is not supported (every connection would see an "
                             "empty database); give a file path such as reviews.db")
        return "sqlite:///" + str(Path(url).expanduser().resolve())
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in ("sqlite", "sqlite+pysqlite"):
        if rest in ("", "/", "/:memory:") or "mode=memory" in rest:
            raise StoreError(f"in-memory SQLite {url!r} is not supported (every connection would see an "
                             "empty database); give a file: sqlite:///path/to/reviews.db")
        if not rest.startswith("/"):
            raise StoreError(f"SQLite URL {url!r} has a host part; write sqlite:///relative.db or "
                             "sqlite:////absolute/path.db")
        return url
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        try:
            parsed = make_url("postgresql+psycopg://" + rest)
        except ArgumentError as exc:
            raise StoreError(f"cannot parse database URL {_mask(url)!r}: {exc}") from None
        if not parsed.database:
            raise StoreError(f"PostgreSQL URL {_mask(url)!r} names no database; add /DATABASE at the end")
        return "postgresql+psycopg://" + rest
    raise StoreError(f"unsupported database URL {_mask(url)!r}; accepted: {ACCEPTED_URLS}")


def _mask(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def safe_url(url: str | Engine) -> str:
    """The URL of ``url`` (or of an engine) with the password replaced by ``***``."""
    if isinstance(url, Engine):
        return url.url.render_as_string(hide_password=True)
    return _mask(url)


def make_engine(url: str) -> Engine:
    """Create a SQLAlchemy engine for ``url`` (normalised first with `normalise_url`).

    SQLite: WAL journal (readers never wait for the writer), ``foreign_keys=ON``, a busy
    timeout of `DB_WAIT_S`, ``synchronous=FULL`` (a committed item survives a crash of the
    process or of the machine). A database file that does not exist yet is created readable by
    its owner only (0600; SQLite gives its ``-wal`` and ``-shm`` files the same mode): it holds
    the texts and the token hashes. Transactions are begun by us, not by the driver: a
    transaction on a connection with execution option ``sqlite_immediate=True`` starts with
    ``BEGIN IMMEDIATE`` and so takes the write lock up front, which is what makes the queue
    claim safe between processes.

    PostgreSQL: psycopg 3 with a pool of 10 (+10 overflow) connections, checked before use,
    ``lock_timeout`` `DB_WAIT_S` and a 5 s connect timeout.

    On both a request waits at most `DB_WAIT_S` for a pooled connection.
    """
    url = normalise_url(url)
    if url.startswith("sqlite"):
        _create_private_file(make_url(url).database)
        # As many pooled connections as request threads can hold at once (anyio's pool: 40), so
        # a burst of requests reuses connections instead of opening overflow ones and closing
        # them again (each open runs the PRAGMAs below); an SQLite connection is a file handle.
        engine = sa.create_engine(
            url, connect_args={"timeout": DB_WAIT_S, "check_same_thread": False},
            pool_size=SQLITE_POOL_SIZE, max_overflow=10, pool_timeout=DB_WAIT_S,
        )
        _configure_sqlite(engine)
        return engine
    # A connect_timeout in the URL wins over the default.
    connect_args = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
    engine = sa.create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, pool_recycle=3600,
                              pool_timeout=DB_WAIT_S, connect_args=connect_args)
    _configure_postgres(engine)
    return engine


def _create_private_file(database: str | None) -> None:
    """Create the SQLite file with mode 0600 unless it exists (an existing file keeps its mode)."""
    if not database:
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # a missing directory or no permission: SQLite's own error names it on connect
    os.close(fd)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level: pysqlite's own implicit BEGIN would be deferred and
        # could fail with "database is locked" half way through a write transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {round(DB_WAIT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _configure_postgres(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # A statement that waits for a lock (a row another transaction holds FOR UPDATE, a
        # table someone LOCKed) gives up after DB_WAIT_S instead of holding a worker for good.
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        dbapi_connection.execute(f"SET lock_timeout = {round(DB_WAIT_S * 1000)}")
        dbapi_connection.autocommit = autocommit


@contextmanager
def transaction_waiting(connection: sa.Connection, seconds: float) -> Iterator[None]:
    """A transaction on ``connection`` that waits at most ``seconds`` for locks.

    SQLite: the connection's busy timeout, set before ``BEGIN`` and put back afterwards.
    PostgreSQL: ``SET LOCAL lock_timeout`` as its first statement, so the setting ends with the
    transaction. Nothing is set when ``seconds`` is the connections' own `DB_WAIT_S`.
    """
    milliseconds, default = max(1, round(seconds * 1000)), round(DB_WAIT_S * 1000)
    if connection.dialect.name == "sqlite" and milliseconds == default:
        with connection.begin():
            yield
    elif connection.dialect.name == "sqlite":
        raw = connection.connection.driver_connection
        raw.execute(f"PRAGMA busy_timeout = {milliseconds}")
        try:
            with connection.begin():
                yield
        finally:
            raw.execute(f"PRAGMA busy_timeout = {default}")
    else:
        with connection.begin():
            if milliseconds != default:
                connection.exec_driver_sql(f"SET LOCAL lock_timeout = {milliseconds}")
            yield


def is_lock_timeout(exc: BaseException) -> bool:
    """Whether a driver error means another transaction held a lock too long (SQLite's
    "database is locked", PostgreSQL's lock_timeout, or no pooled connection free within the
    wait) rather than a broken database."""
    if isinstance(exc, PoolTimeout):
        return True
    orig = getattr(exc, "orig", None) or exc
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate == "55P03"  # lock_not_available
    text = str(orig).lower()
    return "database is locked" in text or "database table is locked" in text


# ---------------------------------------------------------------------------- migrations
def alembic_config(connection: sa.Connection) -> Any:
    """An Alembic Config for the service's migrations that runs on ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("howsure.service") / "migrations"))
    config.attributes["connection"] = connection
    return config


# Two processes starting at once must not both create the tables: PostgreSQL serialises them
# with an advisory lock, SQLite with BEGIN IMMEDIATE; threads of one process with this lock.
_UPGRADE_LOCK = threading.Lock()
_ADVISORY_KEY = zlib.crc32(b"howsure.service.db.upgrade")


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Bring the database schema up to ``revision`` (Alembic ``upgrade head`` by default).

    Safe to call from several processes at once and on an up-to-date database (then it does
    nothing). Raises `StoreError` when the database cannot be reached or migrated.
    """
    _run_alembic(url_or_engine, "upgrade", revision)


def downgrade(url_or_engine: str | Engine, revision: str = "base") -> None:
    """Alembic ``downgrade``: ``base`` drops every table of the service (used by the tests)."""
    _run_alembic(url_or_engine, "downgrade", revision)


def _run_alembic(url_or_engine: str | Engine, direction: str, revision: str) -> None:
    from alembic import command
    from alembic.util import CommandError

    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    try:
        # One transaction for the whole migration: both back ends have transactional DDL, so a
        # failed migration leaves the schema as it was.
        with _UPGRADE_LOCK, engine.connect() as connection:
            connection = connection.execution_options(sqlite_immediate=True)
            sqlite = engine.dialect.name == "sqlite"
            with _foreign_keys_checked_at_end(connection) if sqlite else nullcontext(), \
                    transaction_waiting(connection, MIGRATION_WAIT_S):
                if not sqlite:
                    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
                before = _current_revision(connection)
                getattr(command, direction)(alembic_config(connection), revision)
                # Every store open runs this: scan the foreign keys only when a migration ran.
                if sqlite and _current_revision(connection) != before:
                    _check_foreign_keys(connection)
    except DBAPIError as exc:
        raise StoreError(f"cannot migrate database {safe_url(engine)}: {error_summary(exc)}") from exc
    except CommandError as exc:
        raise StoreError(f"cannot {direction} database {safe_url(engine)} to revision {revision!r}: {exc}") from exc
    finally:
        if engine is not url_or_engine:
            engine.dispose()


def _current_revision(connection: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _foreign_keys_checked_at_end(connection: sa.Connection) -> Iterator[None]:
    """SQLite's way to change a table others refer to (https://sqlite.org/lang_altertable.html):
    foreign keys off while a migration copies the table (dropping the original would otherwise
    fail or cascade), checked as a whole before the commit, and on again afterwards. The pragma
    works only outside a transaction, hence around ``BEGIN``."""
    raw = connection.connection.driver_connection
    raw.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys = ON")


def _check_foreign_keys(connection: sa.Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        table, rowid, parent = broken[0][:3]
        raise StoreError(f"the migration would leave {len(broken)} rows referring to missing rows, e.g. {table} "
                         f"row {rowid} -> {parent}; nothing was changed")


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None before the first `upgrade`)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def error_summary(exc: BaseException) -> str:
    """The driver's first line of a database error, without SQLAlchemy's SQL and links."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def utcnow() -> datetime:
    """The current time, aware, in UTC: what every timestamp of the store is."""
    return datetime.now(timezone.utc)
