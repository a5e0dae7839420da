"""Fixtures of the service tests: a fresh database on each back end, a store on it, and a
valid policy.

    def test_something(store, policy_dict, new_item):
        policy = store.add_policy(policy_dict, actor="admin")
        [item] = store.add_items([new_item(policy, confidence=0.6)], actor="client")

``db_url`` is parametrised over ``sqlite`` (a fresh file under tmp_path) and ``postgresql`` (a
fresh schema in a database created from HOWSURE_TEST_POSTGRES_URL for the session and dropped
afterwards), so every test using it runs on both. Without that variable the PostgreSQL runs are skipped, except in CI
(env ``CI`` set), where every skip but a CUDA one fails (tests/conftest.py): CI must never pass by
skipping its database.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

POSTGRES_ENV = "HOWSURE_TEST_POSTGRES_URL"

TEST_INSTRUCTION = "Is the sentiment of this text positive or negative? Answer with one word.\n\nText: {text}"


@functools.lru_cache(maxsize=16)
def _certified(labels: tuple[str, ...], threshold: float | None, with_task: bool) -> str:
    import json

    from howsure.decisions.policy_certification import certify_policy

    rng = np.random.default_rng(0)
    n, k = 1000, len(labels)
    # Synthetic raw probabilities that are roughly calibrated: the top label is right with
    # probability equal to its score, so certification finds a threshold.
    raw = rng.dirichlet(np.full(k, 0.5), size=n)
    top = raw.argmax(axis=1)
    right = rng.random(n) < raw[np.arange(n), top]
    other = (top + rng.integers(1, k, size=n)) % k
    truth = [labels[t if ok else o] for t, ok, o in zip(top, right, other)]
    task = {"name": "test-sentiment", "instruction": TEST_INSTRUCTION,
            "labels": {label: [label] for label in labels}} if with_task else None
    policy = certify_policy(truth, raw, target_accuracy=0.8, delta=0.1, labels=list(labels), task=task,
                            model_id="test-model")
    # The threshold is set by hand so tests know which confidences are automated; the
    # guarantee block stays the certified one (these are test policies, not real ones).
    policy.threshold = threshold
    policy._validate()
    return json.dumps(policy.to_dict())


def make_policy_dict(labels: tuple[str, ...] | list[str] = ("negative", "positive"), threshold: float | None = 0.9,
                     *, with_task: bool = True) -> dict[str, Any]:
    """A valid policy JSON (`howsure.decisions.policy.Policy.to_dict`) certified on synthetic data.

    Items whose calibrated top-label confidence is >= ``threshold`` are automated (None:
    nothing is). No calibrator, so the calibrated confidence is the raw one. With
    ``with_task`` the body carries a task whose labels are ``labels`` (verbalizer = the label
    name), as the service needs to build prompts.
    """
    import json

    return json.loads(_certified(tuple(labels), threshold, with_task))


@pytest.fixture
def policy_dict() -> dict[str, Any]:
    """`make_policy_dict()`: labels negative/positive, threshold 0.9, with a task."""
    return make_policy_dict()


@pytest.fixture
def policy_dict_factory():
    """`make_policy_dict` itself, for other labels or thresholds."""
    return make_policy_dict


def _postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        # A failure in CI (tests/conftest.py): the PostgreSQL half of the suite must run there.
        pytest.skip(f"{POSTGRES_ENV} is not set: PostgreSQL tests skipped (make test sets it)")
    return url


class _PostgresTestDatabase:
    """One database per test session, and in it one fresh schema per test.

    CREATE/DROP DATABASE cost up to seconds each on a busy machine (they copy a template and
    wait for the disk); CREATE SCHEMA costs milliseconds. Each test's URL sets the connection's
    ``search_path`` to its own schema, so the tests see an empty database of their own, as
    separate as separate databases would be for everything the service does.
    """

    def __init__(self, admin_url: str) -> None:
        import psycopg

        self.admin_url = admin_url
        self.name = f"howsure_test_{uuid.uuid4().hex[:12]}"
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
                admin.execute(f'CREATE DATABASE "{self.name}"')
        except psycopg.Error as exc:
            pytest.fail(f"cannot create a test database on the server of {POSTGRES_ENV}: {exc}")
        self.url = _with_database(admin_url, self.name)
        self._connection = psycopg.connect(self.url.replace("postgresql+psycopg://", "postgresql://", 1),
                                           autocommit=True, connect_timeout=10)
        # A test that leaves a transaction open must not hang the next one's clean-up.
        self._connection.execute("SET lock_timeout = '5s'")

    def new_schema(self) -> tuple[str, str]:
        """(schema, URL whose connections work in that fresh, empty schema)."""
        from sqlalchemy.engine import make_url

        schema = f"t_{uuid.uuid4().hex[:12]}"
        self._connection.execute(f'CREATE SCHEMA "{schema}"')
        url = make_url(self.url).update_query_dict({"options": f"-csearch_path={schema}"})
        return schema, url.render_as_string(hide_password=False)

    def drop_schema(self, schema: str) -> None:
        import psycopg

        try:
            self._connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        except psycopg.errors.LockNotAvailable:
            pass  # still in use by a leaked connection: goes with the database at the end

    def close(self) -> None:
        import psycopg

        self._connection.close()
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as admin:
            # FORCE ends connections a failed test left open (PostgreSQL 13+).
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _postgres_database():
    database = _PostgresTestDatabase(_postgres_admin_url())
    yield database
    database.close()


def _with_database(admin_url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    from howsure.service.db import normalise_url

    url = make_url(normalise_url(admin_url)).set(database=database)
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> Iterator[str]:
    """A URL of a fresh, empty database (no tables yet) on each back end.

    SQLite: a new file under tmp_path. PostgreSQL: a new schema in this session's test
    database (the URL carries ``options=-csearch_path=<schema>``), dropped after the test.
    """
    if request.param == "sqlite":
        # An empty file is an empty SQLite database: commands that refuse a missing one take it.
        (tmp_path / "reviews.db").touch()
        yield f"sqlite:///{tmp_path / 'reviews.db'}"
        return
    database = request.getfixturevalue("_postgres_database")
    schema, url = database.new_schema()
    try:
        yield url
    finally:
        database.drop_schema(schema)


@pytest.fixture
def store(db_url):
    """A migrated `ReviewStore` on the fresh database of `db_url` (no policy, no users)."""
    from howsure.service.store import ReviewStore

    review_store = ReviewStore(db_url)
    yield review_store
    review_store.close()


@pytest.fixture
def new_item():
    """A factory of `NewItem`s decided by a stored policy record.

    ``new_item(policy, text="...", confidence=0.7, prediction=None, audit=False,
    request_id=None, external_id=None)``: the prediction defaults to the policy's first label,
    the decision follows the policy's threshold, ``audit=True`` queues an auto item for audit.
    """
    from howsure.service.store import NewItem

    def make(policy: Any, text: str = "a text", confidence: float = 0.7, prediction: str | None = None,
             *, audit: bool = False, request_id: str | None = None, external_id: str | None = None) -> NewItem:
        labels = policy.body["labels"]
        prediction = labels[0] if prediction is None else prediction
        threshold = policy.body["threshold"]
        decision = "auto" if threshold is not None and confidence >= threshold else "review"
        rest = (1 - confidence) / (len(labels) - 1)
        probabilities = {label: (confidence if label == prediction else rest) for label in labels}
        return NewItem(
            text=text, prediction=prediction, confidence=confidence, probabilities=probabilities,
            raw_probabilities=dict(probabilities), decision=decision,
            queue_reason="review" if decision == "review" else ("audit" if audit else None),
            policy_version=policy.version, policy_id=policy.policy_id, request_id=request_id,
            external_id=external_id,
        )

    return make


@pytest.fixture
def lock_database():
    """``with lock_database(store): ...`` holds the store's database locked from another
    connection, as another process would: SQLite ``BEGIN EXCLUSIVE`` on the file (writers wait,
    readers still read, as WAL allows), PostgreSQL ``ACCESS EXCLUSIVE`` locks on the tables a
    request writes or reads its policy from."""
    import contextlib

    @contextlib.contextmanager
    def hold(store: Any) -> Iterator[None]:
        if store.dialect == "sqlite":
            import sqlite3

            from sqlalchemy.engine import make_url

            connection = sqlite3.connect(make_url(store.url).database, isolation_level=None)
            connection.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                connection.execute("ROLLBACK")
                connection.close()
        else:
            import psycopg

            url = store.engine.url.render_as_string(hide_password=False).replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(url) as connection:
                connection.execute("LOCK TABLE items, reviews, policies IN ACCESS EXCLUSIVE MODE")
                try:
                    yield
                finally:
                    connection.rollback()

    return hold
