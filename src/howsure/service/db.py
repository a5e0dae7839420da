"""Database layer of the review service: table definitions, engine set-up, migrations.

    from howsure.service.db import normalise_url, make_engine, upgrade
    url = normalise_url("reviews.db")         # -> "sqlite:////abs/path/reviews.db"
    engine = make_engine(url)                 # SQLite: WAL, foreign keys, 30 s busy timeout
    upgrade(engine)                           # Alembic "upgrade head"

Two back ends are supported: a SQLite file (the embedded default, one machine) and PostgreSQL
through psycopg 3 (several workers and reviewers). The schema is created only by the Alembic
revisions in ``migrations/versions``; `metadata` below mirrors it for queries and is checked
against the migrated database by the tests, so the two cannot drift apart silently.

All timestamps are stored in UTC. SQLite has no time zone type, so `UTCDateTime` stores naive
UTC there and hands back aware datetimes on both back ends.
"""

from __future__ import annotations

import threading
import zlib
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from howsure.errors import StoreError

__all__ = [
    "ROLES", "DECISIONS", "QUEUE_REASONS", "STATUSES", "SOURCES", "TABLES", "UTCDateTime", "metadata",
    "users", "tokens", "policies", "items", "reviews", "events", "normalise_url", "make_engine", "upgrade",
    "downgrade", "current_revision", "safe_url", "utcnow",
]

ROLES = ("admin", "reviewer", "client")
DECISIONS = ("auto", "review")
QUEUE_REASONS = ("review", "audit")
STATUSES = ("done", "queued", "claimed", "reviewed")
SOURCES = ("review", "audit")

SQLITE_BUSY_TIMEOUT_S = 30
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
    sa.UniqueConstraint("request_id", name="uq_items_request_id"),
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

TABLES = ("users", "tokens", "policies", "items", "reviews", "events")


# ---------------------------------------------------------------------------- URLs and engines
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

    SQLite: WAL journal (readers never wait for the writer), ``foreign_keys=ON``, a 30 s busy
    timeout, ``synchronous=FULL`` (a committed item survives a crash of the process or of the
    machine). Transactions are begun by us, not by the driver: a transaction on a connection
    with execution option ``sqlite_immediate=True`` starts with ``BEGIN IMMEDIATE`` and so takes
    the write lock up front, which is what makes the queue claim safe between processes.

    PostgreSQL: psycopg 3 with a pool of 10 (+10 overflow) connections, checked before use.
    """
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
            pool_size=10, max_overflow=20,
        )
        _configure_sqlite(engine)
        return engine
    return sa.create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, pool_recycle=3600)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level: pysqlite's own implicit BEGIN would be deferred and
        # could fail with "database is locked" half way through a write transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


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
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
                getattr(command, direction)(alembic_config(connection), revision)
    except DBAPIError as exc:
        raise StoreError(f"cannot migrate database {safe_url(engine)}: {error_summary(exc)}") from exc
    except CommandError as exc:
        raise StoreError(f"cannot {direction} database {safe_url(engine)} to revision {revision!r}: {exc}") from exc
    finally:
        if engine is not url_or_engine:
            engine.dispose()


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
