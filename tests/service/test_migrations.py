"""Alembic migrations: the exact schema other applications read, on both back ends."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from howsure.errors import StoreError
from howsure.service import db
from howsure.service.store import ReviewStore

# Column names in table order. Changing these breaks readers of the database: add a new
# migration and update this list on purpose.
EXPECTED_COLUMNS = {
    "users": ["id", "name", "role", "created_at", "disabled"],
    "tokens": ["id", "user_id", "token_hash", "note", "created_at", "last_used_at", "revoked_at"],
    "policies": ["id", "version", "policy_id", "body", "created_at", "created_by", "active", "note"],
    "items": ["id", "request_id", "external_id", "text", "created_at", "created_by", "policy_version",
              "policy_id", "prediction", "confidence", "probabilities", "raw_probabilities", "decision",
              "queue_reason", "status", "queued_at", "claimed_by", "claim_expires_at", "audit_rate"],
    "reviews": ["id", "item_id", "reviewer", "label", "created_at", "policy_version", "agreed_with_model",
                "source"],
    "events": ["id", "at", "actor", "action", "item_id", "policy_version", "detail"],
    "sessions": ["id", "session_hash", "user_id", "token_id", "created_at", "expires_at", "ended_at"],
}
NULLABLE = {
    "tokens": {"last_used_at", "revoked_at"},
    "items": {"request_id", "external_id", "queued_at", "claimed_by", "claim_expires_at", "queue_reason",
              "audit_rate"},
    "events": {"item_id", "policy_version"},
    "sessions": {"ended_at"},
}


@pytest.fixture
def engine(db_url):
    engine = db.make_engine(db_url)
    yield engine
    engine.dispose()


def test_upgrade_creates_exactly_these_columns(engine):
    assert db.current_revision(engine) is None
    db.upgrade(engine)
    assert db.current_revision(engine) == "0004"
    inspector = sa.inspect(engine)
    assert set(inspector.get_table_names()) == set(EXPECTED_COLUMNS) | {"alembic_version"}
    for table, expected in EXPECTED_COLUMNS.items():
        columns = inspector.get_columns(table)
        assert [c["name"] for c in columns] == expected, table
        nullable = {c["name"] for c in columns if c["nullable"]}
        assert nullable == NULLABLE.get(table, set()), table
    assert db.TABLES == tuple(EXPECTED_COLUMNS)


def test_upgrade_creates_the_constraints_and_indexes(engine):
    db.upgrade(engine)
    inspector = sa.inspect(engine)

    def uniques(table):
        found = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)}
        # SQLite and PostgreSQL report a unique index (not constraint) only as an index.
        found |= {tuple(i["column_names"]) for i in inspector.get_indexes(table) if i["unique"]}
        return found

    assert ("name",) in uniques("users")
    assert ("token_hash",) in uniques("tokens")
    assert ("version",) in uniques("policies")
    assert ("created_by", "request_id") in uniques("items") and ("request_id",) not in uniques("items")
    assert ("session_hash",) in uniques("sessions")
    assert ("item_id",) in uniques("reviews")
    assert ("status", "queued_at") in {tuple(i["column_names"]) for i in inspector.get_indexes("items")}
    foreign = {(fk["constrained_columns"][0], fk["referred_table"], fk["referred_columns"][0])
               for table in ("tokens", "items", "reviews", "sessions") for fk in inspector.get_foreign_keys(table)}
    assert foreign == {("user_id", "users", "id"), ("policy_version", "policies", "version"),
                       ("item_id", "items", "id"), ("token_id", "tokens", "id")}
    checks = {c["name"] for table in ("users", "items", "reviews") for c in inspector.get_check_constraints(table)}
    assert {"ck_users_role", "ck_items_decision", "ck_items_queue_reason", "ck_items_status",
            "ck_reviews_source"} <= checks


def test_metadata_matches_the_migrated_schema(engine):
    """The queries' view of the tables (db.metadata) and the migrations agree on everything
    Alembic can compare: columns, types, nullability, indexes, unique constraints."""
    db.upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, db.metadata) == []


def test_database_enforces_the_invariants(engine):
    """UNIQUE(item_id) on reviews, one active policy, CHECKs: not just the code's promise."""
    db.upgrade(engine)
    now = db.utcnow()
    with engine.begin() as connection:
        connection.execute(db.policies.insert().values(version=1, policy_id="p", body="{}", created_at=now,
                                                       created_by="t", active=True))
        connection.execute(db.items.insert().values(
            id=1, text="x", created_at=now, created_by="t", policy_version=1, policy_id="p", prediction="a",
            confidence=0.5, probabilities="{}", raw_probabilities="{}", decision="review", queue_reason="review",
            status="queued", queued_at=now))
        connection.execute(db.reviews.insert().values(item_id=1, reviewer="r", label="a", created_at=now,
                                                      policy_version=1, agreed_with_model=True, source="review"))
    violations = [
        db.reviews.insert().values(item_id=1, reviewer="s", label="a", created_at=now, policy_version=1,
                                   agreed_with_model=True, source="review"),
        db.policies.insert().values(version=2, policy_id="q", body="{}", created_at=now, created_by="t", active=True),
        db.items.update().values(status="lost"),
        db.users.insert().values(name="u", role="root", created_at=now),
        db.reviews.insert().values(item_id=99, reviewer="s", label="a", created_at=now, policy_version=1,
                                   agreed_with_model=True, source="review"),
    ]
    for statement in violations:
        with pytest.raises(sa.exc.IntegrityError):
            with engine.begin() as connection:
                connection.execute(statement)


def test_downgrade_and_upgrade_again(engine):
    db.upgrade(engine)
    db.downgrade(engine, "base")
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    assert db.current_revision(engine) is None
    db.upgrade(engine)
    assert set(EXPECTED_COLUMNS) <= set(sa.inspect(engine).get_table_names())


def test_concurrent_upgrades_on_a_fresh_database(db_url):
    """Worker processes starting together each migrate; the database locks (advisory lock on
    PostgreSQL, BEGIN IMMEDIATE on SQLite) make all but one a no-op."""
    code = "import sys; from howsure.service.db import upgrade; upgrade(sys.argv[1])"
    processes = [subprocess.Popen([sys.executable, "-c", code, db_url], stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    engine = db.make_engine(db_url)
    try:
        assert db.current_revision(engine) == "0004"
        assert set(EXPECTED_COLUMNS) <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_store_without_migrate_needs_a_current_schema(db_url):
    with pytest.raises(StoreError, match="schema revision None, this howsure needs '0004'"):
        ReviewStore(db_url, migrate=False)
    ReviewStore(db_url).close()
    store = ReviewStore(db_url, migrate=False)
    assert store.queue_length() == 0
    store.close()


def test_upgrade_to_an_unknown_revision_is_a_store_error(engine):
    with pytest.raises(StoreError, match="'9999'"):
        db.upgrade(engine, "9999")


def test_upgrade_from_0001_keeps_every_row_and_checks(engine):
    """A database made by the first release: items, a review pointing at one and a token
    survive the copy of ``items`` (0003) with their constraints, and the new columns start
    empty."""
    db.upgrade(engine, "0001")
    now = db.utcnow()
    with engine.begin() as connection:
        connection.execute(db.users.insert().values(id=1, name="u", role="client", created_at=now))
        connection.execute(db.tokens.insert().values(user_id=1, token_hash="h" * 64, created_at=now))
        connection.execute(db.policies.insert().values(version=1, policy_id="p", body="{}", created_at=now,
                                                       created_by="t", active=True))
        for item_id in (1, 2):
            connection.execute(sa.text(
                "INSERT INTO items (id, request_id, text, created_at, created_by, policy_version, policy_id, "
                "prediction, confidence, probabilities, raw_probabilities, decision, queue_reason, status) "
                "VALUES (:id, :key, 'x', :now, 'u', 1, 'p', 'a', 0.5, '{}', '{}', 'review', 'review', 'queued')"),
                {"id": item_id, "key": f"r{item_id}", "now": now})
        connection.execute(db.reviews.insert().values(item_id=1, reviewer="r", label="a", created_at=now,
                                                      policy_version=1, agreed_with_model=True, source="review"))
    db.upgrade(engine)
    assert db.current_revision(engine) == "0004"
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT id, request_id, audit_rate FROM items ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "r1", None), (2, "r2", None)]
        assert connection.execute(sa.text("SELECT item_id FROM reviews")).scalar() == 1
    bad = [db.items.update().values(status="lost"),
           db.reviews.insert().values(item_id=99, reviewer="s", label="a", created_at=now, policy_version=1,
                                      agreed_with_model=True, source="review"),
           # the same client's key twice
           db.items.update().where(db.items.c.id == 2).values(request_id="r1")]
    for statement in bad:
        with pytest.raises(sa.exc.IntegrityError):
            with engine.begin() as connection:
                connection.execute(statement)
    db.downgrade(engine, "0001")
    assert "sessions" not in sa.inspect(engine).get_table_names()
