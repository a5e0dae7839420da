"""The queue under concurrency, on both back ends: reviewers in threads of one process and in
separate processes never get the same item, and no item is lost or reviewed twice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections import Counter

import sqlalchemy as sa

from howsure.errors import ClaimError
from howsure.service.store import ReviewStore


def _queue_items(store, policy, new_item, n):
    return store.add_items([new_item(policy, text=f"item {i}", confidence=0.6) for i in range(n)], actor="client")


def _review_counts(store):
    with store.engine.connect() as connection:
        per_item = connection.execute(sa.text("SELECT item_id, count(*) FROM reviews GROUP BY item_id")).all()
        statuses = dict(connection.execute(sa.text("SELECT status, count(*) FROM items GROUP BY status")).all())
    return Counter({item_id: count for item_id, count in per_item}), statuses


def test_eight_reviewers_review_500_items_exactly_once(store, policy_dict, new_item):
    policy = store.add_policy(policy_dict, actor="admin")
    queued = _queue_items(store, policy, new_item, 500)
    reviewers = [f"reviewer-{k}" for k in range(8)]
    reviewed: dict[str, list[int]] = {name: [] for name in reviewers}
    held: dict[int, str] = {}
    held_lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(len(reviewers))

    def work(name: str) -> None:
        try:
            start.wait()
            while True:
                item = store.claim_next(name)
                if item is None:
                    return
                with held_lock:
                    # Nobody else may hold this item: leases are 300 s, nothing expires here.
                    assert item.id not in held, f"{item.id} claimed by {held.get(item.id)} and {name}"
                    held[item.id] = name
                assert item.claimed_by == name and item.status == "claimed"
                store.submit_review(item.id, name, "positive" if item.id % 2 else "negative")
                reviewed[name].append(item.id)
        except BaseException as exc:  # reported below, with the thread's name
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,), name=name) for name in reviewers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a reviewer thread hung"
    assert not errors, errors

    all_reviewed = [item_id for ids in reviewed.values() for item_id in ids]
    assert sorted(all_reviewed) == sorted(item.id for item in queued)  # each once, none lost
    per_item, statuses = _review_counts(store)
    assert set(per_item.values()) == {1} and len(per_item) == 500
    assert statuses == {"reviewed": 500}
    assert sum(store.reviewer_count(name) for name in reviewers) == 500
    assert all(store.reviewer_count(name) == len(reviewed[name]) for name in reviewers)
    # The work was shared: every reviewer reviewed something.
    assert all(reviewed[name] for name in reviewers), {name: len(ids) for name, ids in reviewed.items()}
    stats = store.stats()
    assert (stats["reviews"], stats["queue_length"], stats["claimed"]) == (500, 0, 0)
    assert len(store.events(action="review", limit=None)) == 500
    assert len(store.events(action="claim", limit=None)) == 500


def test_concurrent_submits_of_one_item_accept_exactly_one(store, policy_dict, new_item):
    policy = store.add_policy(policy_dict, actor="admin")
    [item] = _queue_items(store, policy, new_item, 1)
    store.claim_next("alice")
    outcomes: list[str] = []
    start = threading.Barrier(6)

    def submit() -> None:
        start.wait()
        try:
            store.submit_review(item.id, "alice", "negative")
            outcomes.append("ok")
        except ClaimError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["conflict"] * 5 + ["ok"]
    assert _review_counts(store)[0] == Counter({item.id: 1})


def test_concurrent_retries_with_one_request_id_store_one_item(store, policy_dict, new_item):
    policy = store.add_policy(policy_dict, actor="admin")
    batch = [new_item(policy, text=f"t{i}", request_id=f"req-{i}") for i in range(20)]
    results: list[list[int]] = []
    start = threading.Barrier(6)

    def send() -> None:
        start.wait()
        results.append([record.id for record in store.add_items(batch, actor="client")])

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 6 and all(ids == results[0] for ids in results)
    assert store.stats()["items"] == 20


WORKER = textwrap.dedent("""
    import json, sys, time
    from howsure.errors import DatabaseUnavailable
    from howsure.service.store import ReviewStore
    url, name = sys.argv[1], sys.argv[2]
    store = ReviewStore(url)

    def patiently(operation, *args):
        # A write gives up after db.DB_WAIT_S (the service then answers 503 + Retry-After);
        # on a loaded machine three processes hammering one SQLite file can starve one of them
        # that long, and a client then tries again, as this worker does.
        for attempt in range(10):
            try:
                return operation(*args)
            except DatabaseUnavailable:
                if attempt == 9:
                    raise
                time.sleep(0.2)

    done = []
    while True:
        item = patiently(store.claim_next, name)
        if item is None:
            break
        patiently(store.submit_review, item.id, name, "negative")
        done.append(item.id)
    store.close()
    print(json.dumps(done))
""")


def test_reviewers_in_separate_processes(db_url, policy_dict, new_item):
    """Three processes claim from one database: the claim is atomic between processes too."""
    import json

    store = ReviewStore(db_url)
    processes = []
    try:
        policy = store.add_policy(policy_dict, actor="admin")
        queued = _queue_items(store, policy, new_item, 150)
        processes = [subprocess.Popen([sys.executable, "-c", WORKER, db_url, f"proc-{k}"], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for k in range(3)]
        outputs = [process.communicate(timeout=120) for process in processes]
        for process, (_, err) in zip(processes, outputs):
            assert process.returncode == 0, err
        done = {f"proc-{k}": json.loads(out) for k, (out, _) in enumerate(outputs)}
        assert sorted(i for ids in done.values() for i in ids) == sorted(item.id for item in queued)
        per_item, statuses = _review_counts(store)
        assert set(per_item.values()) == {1} and statuses == {"reviewed": 150}
        assert {name: store.reviewer_count(name) for name in done} == {name: len(ids) for name, ids in done.items()}
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        store.close()


def test_concurrent_policy_adds_keep_versions_and_one_active(store, policy_dict_factory):
    n_threads = 4
    bodies = [policy_dict_factory(threshold=t) for t in (0.5, 0.6, 0.7, 0.8)[:n_threads]]
    start = threading.Barrier(n_threads)
    versions: list[int] = []

    def add(body) -> None:
        start.wait()
        versions.append(store.add_policy(body, actor="admin").version)

    threads = [threading.Thread(target=add, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(versions) == list(range(1, n_threads + 1))
    history = store.policy_history()
    assert sum(p.active for p in history) == 1 and history[0].active
