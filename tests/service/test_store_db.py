"""db.py: URL forms, engine settings, clear errors; nothing heavy imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from howsure.errors import StoreError
from howsure.service import db
from howsure.service.store import ReviewStore


@pytest.mark.parametrize("given, expected", [
    ("sqlite:///reviews.db", "sqlite:///reviews.db"),
    ("sqlite:////abs/reviews.db", "sqlite:////abs/reviews.db"),
    ("postgresql://u:p@host:5432/db", "postgresql+psycopg://u:p@host:5432/db"),
    ("postgres://u:p@host/db", "postgresql+psycopg://u:p@host/db"),
    ("postgresql+psycopg://u@host/db", "postgresql+psycopg://u@host/db"),
    ("  sqlite:///x.db ", "sqlite:///x.db"),
])
def test_normalise_url_accepted_forms(given, expected):
    assert db.normalise_url(given) == expected


def test_bare_path_becomes_an_absolute_sqlite_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert db.normalise_url("reviews.db") == f"sqlite:///{tmp_path / 'reviews.db'}"
    assert db.normalise_url("sub/r.db") == f"sqlite:///{tmp_path / 'sub' / 'r.db'}"
    assert db.normalise_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"


@pytest.mark.parametrize("given, message", [
    ("mysql://u:secret@host/db", r"unsupported database URL 'mysql://u:\*\*\*@host/db'; accepted: a SQLite file"),
    ("postgresql+psycopg2://u@h/db", "unsupported database URL"),
    ("", "non-empty string"),
    (None, "non-empty string"),
    (":memory:", "in-memory SQLite"),
    ("sqlite://", "in-memory SQLite"),
    ("sqlite:///:memory:", "in-memory SQLite"),
    ("sqlite://host/x.db", "has a host part"),
    ("postgresql://u:secret@host", r"names no database"),
])
def test_normalise_url_refuses_with_the_accepted_forms(given, message):
    with pytest.raises(StoreError, match=message) as info:
        db.normalise_url(given)
    assert "secret" not in str(info.value)


def test_sqlite_engine_settings(tmp_path):
    engine = db.make_engine(str(tmp_path / "r.db"))
    try:
        with engine.connect() as connection:
            pragmas = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                       for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")}
        assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 3000, "synchronous": 2}
    finally:
        engine.dispose()


def test_unreachable_database_is_a_store_error_without_the_password():
    with pytest.raises(StoreError, match=r"cannot migrate database postgresql\+psycopg://u:\*\*\*@127.0.0.1:9/db") as info:
        ReviewStore("postgresql://u:secret@127.0.0.1:9/db?connect_timeout=2")
    assert "secret" not in str(info.value)


def test_unwritable_sqlite_path_is_a_store_error(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "r.db"
    with pytest.raises(StoreError, match="unable to open database file"):
        ReviewStore(str(missing))


def test_store_exposes_url_engine_dialect(store, db_url):
    assert store.url == db.normalise_url(db_url)
    assert store.dialect in ("sqlite", "postgresql") and store.dialect == store.engine.dialect.name
    if store.dialect == "postgresql":
        assert ":***@" in repr(store) and ":howsure@" not in repr(store)


def test_store_is_a_context_manager(tmp_path):
    with ReviewStore(str(tmp_path / "r.db")) as store:
        assert store.queue_length() == 0
    assert Path(tmp_path / "r.db").exists()


def test_service_storage_imports_no_torch():
    code = ("import sys, howsure.service.store, howsure.service.db; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_new_sqlite_database_and_its_wal_files_are_private(tmp_path):
    """The file holds the texts and the token hashes: owner only (0600), -wal and -shm too,
    whatever the umask would have allowed."""
    import os

    path = tmp_path / "r.db"
    old = os.umask(0o022)
    try:
        with ReviewStore(str(path)) as store:
            store.add_user("u", "client", actor="t")
            store.create_token("u", actor="t")
            modes = {name: os.stat(tmp_path / name).st_mode & 0o777 for name in ("r.db", "r.db-wal", "r.db-shm")}
    finally:
        os.umask(old)
    assert modes == {"r.db": 0o600, "r.db-wal": 0o600, "r.db-shm": 0o600}


def test_an_existing_sqlite_file_keeps_its_mode(tmp_path):
    import os

    path = tmp_path / "r.db"
    path.touch()
    os.chmod(path, 0o640)
    ReviewStore(str(path)).close()
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_a_locked_database_fails_writes_within_the_wait_then_fast(store, lock_database, policy_dict, new_item):
    """A write gives up after db.DB_WAIT_S with DatabaseUnavailable; while the lock stays,
    the next writes fail fast instead of each waiting again; after it, writes work."""
    import time

    from howsure.errors import DatabaseUnavailable

    policy = store.add_policy(policy_dict, actor="admin")
    store.add_items([new_item(policy, confidence=0.6)], actor="client")
    with lock_database(store):
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="locked|lock timeout|busy"):
            store.claim_next("rita")
        first = time.monotonic() - started
        started = time.monotonic()
        for _ in range(5):
            with pytest.raises(DatabaseUnavailable):
                store.claim_next("rita")
        next_five = time.monotonic() - started
    assert db.DB_WAIT_S * 0.9 <= first < db.DB_WAIT_S + 2
    assert next_five < db.DB_WAIT_S
    assert store.claim_next("rita") is not None
    assert store.stats()["items"] == 1


def test_migrations_wait_longer_than_requests(tmp_path):
    """Start-up may wait for another process's migration: upgrade uses MIGRATION_WAIT_S."""
    import sqlite3
    import threading

    path = tmp_path / "r.db"
    ReviewStore(str(path)).close()
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    threading.Timer(db.DB_WAIT_S + 1, lambda: locker.execute("ROLLBACK")).start()
    try:
        db.upgrade(f"sqlite:///{path}")  # waits past DB_WAIT_S for the lock, then succeeds
    finally:
        locker.close()


def test_a_burst_of_requests_reuses_sqlite_connections(tmp_path):
    """As many requests as the worker threads hold connections at once; once they are back in
    the pool, the next burst opens none (an overflow connection would be closed on return and
    opened again, PRAGMAs and all, by the next burst)."""
    import sqlalchemy as sa

    engine = db.make_engine(str(tmp_path / "burst.db"))
    opened = []
    sa.event.listen(engine, "connect", lambda *_: opened.append(1))
    for burst in range(2):
        held = [engine.connect() for _ in range(32)]  # 32 clients' requests at once
        for connection in held:
            connection.execute(sa.text("SELECT 1"))
            connection.close()
        assert len(opened) == 32, f"burst {burst}: {len(opened)} connections opened in all"
    engine.dispose()
