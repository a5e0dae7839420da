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
        assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 30000, "synchronous": 2}
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
