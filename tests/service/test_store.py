"""ReviewStore on both back ends: policies, users and tokens, items, the queue with leases,
reviews, stats and the reads the learning loop uses."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from howsure.errors import ClaimError, PolicyError, StoreError
from howsure.service.store import NewItem, ReviewStore, hash_token


class FakeClock:
    """A settable clock: leases expire when the test says so, not after a sleep."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clocked(db_url, clock):
    """A store whose time is `clock`."""
    review_store = ReviewStore(db_url, clock=clock)
    yield review_store
    review_store.close()


@pytest.fixture
def policy(store, policy_dict):
    return store.add_policy(policy_dict, actor="admin", note="first")


def queue(store, policy, new_item, n, **kwargs):
    """Add ``n`` review items (confidence below the threshold) and return their records."""
    return store.add_items([new_item(policy, text=f"text {i}", confidence=0.6, **kwargs) for i in range(n)],
                           actor="client")


# ---------------------------------------------------------------------------- policies
def test_policy_versions_activation_and_rollback(store, policy_dict_factory):
    assert store.active_policy() is None
    assert store.policy_history() == []
    first = store.add_policy(policy_dict_factory(threshold=0.9), actor="admin", note="first")
    second = store.add_policy(policy_dict_factory(threshold=0.8), actor="loop", note="recalibrated")
    assert (first.version, second.version) == (1, 2)
    assert store.active_policy().version == 2
    assert [p.version for p in store.policy_history()] == [2, 1]
    assert [p.active for p in store.policy_history()] == [True, False]
    assert second.body["threshold"] == 0.8 and second.note == "recalibrated" and second.created_by == "loop"
    assert second.policy_id == second.body["policy_id"] != first.policy_id
    assert second.labels == ["negative", "positive"]
    assert second.to_policy().threshold == 0.8

    rolled_back = store.activate_policy(1, actor="admin")
    assert rolled_back.active and rolled_back.version == 1
    assert store.active_policy().version == 1
    assert [p.active for p in store.policy_history()] == [False, True]
    event = store.events(action="policy_activated", limit=1)[0]
    assert (event.actor, event.policy_version, event.detail) == ("admin", 1, {"previous_version": 2})

    # Activating the active one is a no-op, not a second event.
    store.activate_policy(1, actor="admin")
    assert len(store.events(action="policy_activated")) == 3

    inactive = store.add_policy(policy_dict_factory(threshold=0.7), actor="admin", activate=False)
    assert inactive.version == 3 and not inactive.active
    assert store.active_policy().version == 1


def test_policy_errors(store, policy_dict):
    with pytest.raises(PolicyError, match="format"):
        store.add_policy({"labels": ["a", "b"]}, actor="admin")
    edited = dict(policy_dict, threshold=0.5)
    with pytest.raises(PolicyError, match="does not match the content"):
        store.add_policy(edited, actor="admin")
    assert store.policy_history() == []
    store.add_policy(policy_dict, actor="admin")
    with pytest.raises(StoreError, match=r"policy version 7 is not in the store; versions: \[1\]"):
        store.get_policy(7)
    with pytest.raises(StoreError, match="policy version 7"):
        store.activate_policy(7, actor="admin")
    with pytest.raises(StoreError, match="integer"):
        store.get_policy("1")


def test_policy_body_without_policy_id_is_stored_with_it(store, policy_dict):
    body = {key: value for key, value in policy_dict.items() if key != "policy_id"}
    record = store.add_policy(body, actor="admin")
    assert record.body["policy_id"] == policy_dict["policy_id"] == record.policy_id


# ---------------------------------------------------------------------------- users and tokens
def test_users_and_tokens(clocked, clock):
    store = clocked
    alice = store.add_user("alice", "reviewer", actor="admin")
    assert (alice.name, alice.role, alice.disabled) == ("alice", "reviewer", False)
    store.add_user("api", "client", actor="admin")
    assert [u.name for u in store.list_users()] == ["alice", "api"]
    assert store.get_user("api").role == "client"
    with pytest.raises(StoreError, match="already exists"):
        store.add_user("alice", "admin", actor="admin")
    with pytest.raises(StoreError, match="unknown role 'boss'"):
        store.add_user("carol", "boss", actor="admin")
    with pytest.raises(StoreError, match="no user called 'nobody'"):
        store.get_user("nobody")
    with pytest.raises(StoreError, match="no user called 'nobody'"):
        store.create_token("nobody", actor="admin")

    token = store.create_token("alice", actor="admin", note="laptop")
    assert token.startswith("hs_") and len(token) == 3 + 43
    assert store.authenticate(token) == alice
    # Only the hash is stored.
    [stored] = store.list_tokens("alice")
    assert stored.hash_prefix == hash_token(token)[:12] and stored.note == "laptop"
    with store.engine.connect() as connection:
        hashes = [row[0] for row in connection.exec_driver_sql("SELECT token_hash FROM tokens")]
    assert hashes == [hash_token(token)] and token not in hashes

    for bad in (None, "", "hs_", "hs_" + "x" * 43, token[:-1], token.upper(), 42):
        assert store.authenticate(bad) is None

    # last_used_at is written at most once a minute.
    first_use = store.list_tokens("alice")[0].last_used_at
    assert first_use == clock.now
    clock.advance(30)
    store.authenticate(token)
    assert store.list_tokens("alice")[0].last_used_at == first_use
    clock.advance(31)
    store.authenticate(token)
    assert store.list_tokens("alice")[0].last_used_at == clock.now

    # A disabled user's tokens stop working, and work again when enabled.
    store.set_user_disabled("alice", True, actor="admin")
    assert store.authenticate(token) is None
    store.set_user_disabled("alice", False, actor="admin")
    assert store.authenticate(token).name == "alice"

    second = store.create_token("alice", actor="admin")
    revoked = store.revoke_token(stored.hash_prefix, actor="admin")
    assert revoked.revoked_at == clock.now and revoked.id == stored.id
    assert store.authenticate(token) is None
    assert store.authenticate(second).name == "alice"
    with pytest.raises(StoreError, match="already revoked"):
        store.revoke_token(stored.id, actor="admin")
    store.revoke_token(second, actor="admin")  # by plaintext
    assert store.authenticate(second) is None
    with pytest.raises(StoreError, match="no token matches id 99"):
        store.revoke_token(99, actor="admin")
    with pytest.raises(StoreError, match="cannot identify a token"):
        store.revoke_token("abc", actor="admin")
    actions = [e.action for e in store.events(limit=None)]
    assert actions.count("token_created") == 2 and actions.count("token_revoked") == 2
    assert actions.count("user_added") == 2


# ---------------------------------------------------------------------------- items
def test_add_items_statuses_and_record_fields(store, policy, new_item):
    items = store.add_items([
        new_item(policy, text="unsure", confidence=0.6, external_id="ext-1"),
        new_item(policy, text="sure", confidence=0.95, prediction="positive"),
        new_item(policy, text="audited", confidence=0.97, audit=True),
    ], actor="client")
    unsure, sure, audited = items
    assert [i.status for i in items] == ["queued", "done", "queued"]
    assert [i.decision for i in items] == ["review", "auto", "auto"]
    assert [i.queue_reason for i in items] == ["review", None, "audit"]
    assert unsure.queued_at is not None and sure.queued_at is None
    assert unsure.external_id == "ext-1" and unsure.created_by == "client"
    assert unsure.policy_version == policy.version and unsure.policy_id == policy.policy_id
    assert sure.probabilities == {"negative": pytest.approx(0.05), "positive": 0.95}
    assert sure.raw_probabilities == sure.probabilities
    assert unsure.created_at.tzinfo is not None
    assert store.get_item(sure.id) == sure
    with pytest.raises(StoreError, match="item 999 is not in the store"):
        store.get_item(999)
    classify = store.events(action="classify", limit=None)
    assert sorted(e.item_id for e in classify) == sorted(i.id for i in items)
    assert all(e.actor == "client" and e.policy_version == policy.version for e in classify)
    assert store.add_items([], actor="client") == []


def test_add_items_is_idempotent_on_request_id(store, policy, new_item):
    first = store.add_items([new_item(policy, text="one", request_id="req-1"),
                             new_item(policy, text="two", request_id="req-2")], actor="client")
    # A retry of the same request (and a duplicate key inside one batch) stores nothing new.
    retry = store.add_items([new_item(policy, text="two", request_id="req-2"),
                             new_item(policy, text="three", request_id="req-3"),
                             new_item(policy, text="three again", request_id="req-3"),
                             new_item(policy, text="one", request_id="req-1")], actor="client")
    assert [r.id for r in retry] == [first[1].id, retry[1].id, retry[1].id, first[0].id]
    assert retry[1].text == "three"
    assert store.stats()["items"] == 3
    assert len(store.events(action="classify", limit=None)) == 3


def test_request_ids_are_per_client(store, policy, new_item):
    """Two clients' items with one key are two items; each client's retry finds its own."""
    [mine] = store.add_items([new_item(policy, text="mine", request_id="k")], actor="client-a")
    [theirs] = store.add_items([new_item(policy, text="theirs", request_id="k")], actor="client-b")
    assert mine.id != theirs.id and (mine.created_by, theirs.created_by) == ("client-a", "client-b")
    [again] = store.add_items([new_item(policy, text="theirs", request_id="k")], actor="client-b")
    assert again.id == theirs.id and again.text == "theirs"
    assert store.stats()["items"] == 2


BAD_FIELDS = [
    ({"decision": "maybe"}, "decision 'maybe'"),
    ({"decision": "review", "queue_reason": None}, "queue_reason in \\['review'\\]"),
    ({"decision": "auto", "queue_reason": "review"}, "queue_reason in \\[None, 'audit'\\]"),
    ({"confidence": 1.5}, "confidence must be a number in \\[0, 1\\], got 1.5"),
    ({"confidence": float("nan")}, "confidence"),
    ({"probabilities": {}}, "probabilities must be a non-empty dict"),
    ({"raw_probabilities": {"negative": -0.1}}, "'negative' -> -0.1"),
    ({"text": None}, "text must be a string"),
    ({"request_id": ""}, "request_id must be null or a string"),
    ({"policy_version": 5}, "policy version 5, which is not in the store"),
    ({"policy_id": "deadbeef"}, "policy_id 'deadbeef' is not the id of policy version 1"),
    ({"prediction": "neutral"}, "prediction 'neutral' is not one of the labels"),
]


def test_add_items_rejects_bad_fields_and_stores_nothing(store, policy, new_item):
    good = new_item(policy)
    for change, message in BAD_FIELDS:
        fields = {**good.__dict__, **change}
        with pytest.raises(StoreError, match=message):
            store.add_items([good, NewItem(**fields)], actor="client")
    # The good item of each batch was not stored either: one transaction per batch.
    assert store.stats()["items"] == 0
    with pytest.raises(StoreError, match="item 0 must be a NewItem, got dict"):
        store.add_items([good.__dict__], actor="client")


# ---------------------------------------------------------------------------- queue
def test_claim_review_and_skip(store, policy, new_item):
    a, b, c = queue(store, policy, new_item, 3)
    assert store.queue_length() == 3

    claimed = store.claim_next("alice")
    assert claimed.id == a.id and claimed.status == "claimed" and claimed.claimed_by == "alice"
    # A reload returns the same item; another reviewer gets the next one.
    assert store.claim_next("alice").id == a.id
    assert store.claim_next("bob").id == b.id
    assert store.queue_length() == 1
    assert store.stats()["claimed"] == 2

    review = store.submit_review(a.id, "alice", "negative")
    assert (review.item_id, review.reviewer, review.label, review.source) == (a.id, "alice", "negative", "review")
    assert review.agreed_with_model and review.policy_version == policy.version
    assert store.get_item(a.id).status == "reviewed"
    assert store.get_review(a.id) == review
    assert store.get_review(b.id) is None
    assert store.reviewer_count("alice") == 1 and store.reviewer_count("bob") == 0

    with pytest.raises(ClaimError, match="already reviewed"):
        store.submit_review(a.id, "alice", "positive")
    with pytest.raises(ClaimError, match="claimed by another reviewer"):
        store.submit_review(b.id, "alice", "positive")
    with pytest.raises(ClaimError, match="not claimed by 'alice'"):
        store.submit_review(c.id, "alice", "positive")
    with pytest.raises(StoreError, match=r"label 'neutral' is not one of the labels \['negative', 'positive'\]"):
        store.submit_review(b.id, "bob", "neutral")
    with pytest.raises(StoreError, match="item 404 is not in the store"):
        store.submit_review(404, "bob", "positive")

    # Skip: b goes to the end of the queue, behind c.
    with pytest.raises(ClaimError, match="claimed by another reviewer"):
        store.release(b.id, "alice")
    released = store.release(b.id, "bob")
    assert released.status == "queued" and released.claimed_by is None
    assert store.claim_next("bob").id == c.id
    assert store.claim_next("carol").id == b.id
    assert store.claim_next("dave") is None
    with pytest.raises(ClaimError, match="already reviewed"):
        store.release(a.id, "alice")

    store.submit_review(c.id, "bob", "positive")
    assert not store.get_review(c.id).agreed_with_model
    actions = [e.action for e in store.events(item_id=b.id, limit=None)]
    assert actions == ["claim", "skip", "claim", "classify"]  # newest first


def test_auto_items_are_not_reviewable(store, policy, new_item):
    [auto] = store.add_items([new_item(policy, confidence=0.99)], actor="client")
    assert store.claim_next("alice") is None
    with pytest.raises(ClaimError, match="decided automatically"):
        store.submit_review(auto.id, "alice", "negative")


def test_claim_argument_errors(store):
    with pytest.raises(StoreError, match="lease_seconds must be a positive number"):
        store.claim_next("alice", lease_seconds=0)
    with pytest.raises(StoreError, match="reviewer must be a non-empty string"):
        store.claim_next("  ")


def test_expired_lease_is_taken_over(clocked, clock, policy_dict, new_item):
    store = clocked
    policy = store.add_policy(policy_dict, actor="admin")
    first, second = queue(store, policy, new_item, 2)
    assert store.claim_next("alice", lease_seconds=60).id == first.id
    clock.advance(59)
    assert store.claim_next("bob", lease_seconds=60).id == second.id  # alice's lease still holds
    assert store.queue_length() == 0
    clock.advance(2)
    # alice's lease is over: bob (already holding `second`) keeps his; carol takes `first`.
    assert store.queue_length() == 1
    taken = store.claim_next("carol", lease_seconds=60)
    assert taken.id == first.id and taken.claimed_by == "carol"
    assert taken.claim_expires_at == clock.now + timedelta(seconds=60)
    [expired] = store.events(action="lease_expired")
    assert (expired.item_id, expired.actor, expired.detail) == (first.id, "carol", {"previous_holder": "alice"})
    with pytest.raises(ClaimError, match="claimed by another reviewer, not 'alice'"):
        store.submit_review(first.id, "alice", "negative")
    # alice's reload gives her nothing: her item is gone and the queue is empty.
    assert store.claim_next("alice") is None
    assert store.submit_review(first.id, "carol", "negative").reviewer == "carol"


def test_late_review_is_accepted_when_nobody_took_the_item(clocked, clock, policy_dict, new_item):
    store = clocked
    policy = store.add_policy(policy_dict, actor="admin")
    [item] = queue(store, policy, new_item, 1)
    store.claim_next("alice", lease_seconds=10)
    clock.advance(3600)
    assert store.queue_length() == 1  # claimable again...
    assert store.submit_review(item.id, "alice", "positive").label == "positive"  # ...but nobody did
    assert store.claim_next("bob") is None


def test_reload_renews_the_lease(clocked, clock, policy_dict, new_item):
    store = clocked
    policy = store.add_policy(policy_dict, actor="admin")
    queue(store, policy, new_item, 1)
    store.claim_next("alice", lease_seconds=60)
    clock.advance(50)
    renewed = store.claim_next("alice", lease_seconds=60)
    assert renewed.claim_expires_at == clock.now + timedelta(seconds=60)
    clock.advance(50)
    assert store.claim_next("bob") is None


def test_lease_expires_in_real_time(store, policy, new_item):
    """Without a fake clock: stored lease times compare correctly with the wall clock."""
    import time

    [item] = queue(store, policy, new_item, 1)
    assert store.claim_next("alice", lease_seconds=0.2).id == item.id
    assert store.claim_next("bob") is None
    time.sleep(0.3)
    assert store.claim_next("bob").id == item.id
    with pytest.raises(ClaimError):
        store.submit_review(item.id, "alice", "negative")


# ---------------------------------------------------------------------------- stats and reads
def test_stats_counts(clocked, clock, policy_dict_factory, new_item):
    store = clocked
    empty = store.stats()
    assert empty["items"] == 0 and empty["automation_rate"] is None and empty["oldest_queued_age_s"] is None
    v1 = store.add_policy(policy_dict_factory(threshold=0.9), actor="admin")
    items = store.add_items(
        [new_item(v1, confidence=0.95), new_item(v1, confidence=0.96, audit=True),
         new_item(v1, confidence=0.97, audit=True), new_item(v1, confidence=0.5),
         new_item(v1, confidence=0.6)], actor="client")
    clock.advance(10)
    v2 = store.add_policy(policy_dict_factory(threshold=0.8), actor="admin")
    store.add_items([new_item(v2, confidence=0.85), new_item(v2, confidence=0.7)], actor="client")
    clock.advance(5)

    audit_a, audit_b = items[1], items[2]
    for item, label in ((audit_a, "negative"), (audit_b, "positive")):
        assert store.claim_next("alice").id == item.id  # oldest first
        store.submit_review(item.id, "alice", label)
    store.claim_next("bob")  # items[3], under lease

    overall = store.stats()
    assert overall == {
        "items": 7, "auto": 4, "review": 3, "automation_rate": 4 / 7, "audit_sampled": 2,
        "audit_reviewed": 2, "audit_correct": 1, "queue_length": 2, "claimed": 1,
        "oldest_queued_age_s": 15.0, "reviews": 2, "policy_version": None,
    }
    first = store.stats(policy_version=1)
    assert (first["items"], first["auto"], first["automation_rate"], first["audit_correct"]) == (5, 3, 0.6, 1)
    assert (first["queue_length"], first["claimed"], first["oldest_queued_age_s"]) == (1, 1, 15.0)
    second = store.stats(policy_version=2)
    assert (second["items"], second["auto"], second["reviews"], second["oldest_queued_age_s"]) == (2, 1, 0, 5.0)


def test_labelled_items_and_live_confidences(store, policy_dict_factory, new_item):
    v1 = store.add_policy(policy_dict_factory(threshold=0.9), actor="admin")
    a, b = store.add_items([new_item(v1, text="<b>a</b>", confidence=0.6, external_id="x1"),
                            new_item(v1, text="b", confidence=0.95, audit=True)], actor="client")
    v2 = store.add_policy(policy_dict_factory(threshold=0.8), actor="admin")
    [c] = store.add_items([new_item(v2, text="c", confidence=0.65)], actor="client")
    for item, label in ((a, "positive"), (b, "negative"), (c, "negative")):
        assert store.claim_next("alice").id == item.id
        store.submit_review(item.id, "alice", label)

    labelled = store.labelled_items()
    assert [x.item_id for x in labelled] == [a.id, b.id, c.id]
    first = labelled[0]
    assert (first.text, first.label, first.prediction, first.decision, first.queue_reason, first.source) == \
        ("<b>a</b>", "positive", "negative", "review", "review", "review")
    assert first.raw_probabilities == a.raw_probabilities and first.confidence == 0.6
    assert (first.reviewer, first.policy_version, first.policy_id, first.external_id) == \
        ("alice", 1, v1.policy_id, "x1")
    assert labelled[1].source == "audit" and labelled[1].decision == "auto"
    assert [x.item_id for x in store.labelled_items(policy_version=2)] == [c.id]

    assert store.live_confidences() == [0.65, 0.95, 0.6]
    assert store.live_confidences(policy_version=1) == [0.95, 0.6]
    assert store.live_confidences(limit=2) == [0.65, 0.95]


def test_events_record_who_when_and_version(store, policy, new_item):
    [item] = queue(store, policy, new_item, 1)
    store.claim_next("alice")
    store.submit_review(item.id, "alice", "positive")
    log = store.events(item_id=item.id)
    assert [e.action for e in log] == ["review", "claim", "classify"]
    assert [e.actor for e in log] == ["alice", "alice", "client"]
    assert all(e.policy_version == policy.version and e.at.tzinfo is not None for e in log)
    assert log[0].detail == {"label": "positive", "prediction": "negative", "source": "review",
                             "agreed_with_model": False}
    assert len(store.events(limit=2)) == 2
    assert [e.action for e in store.events(action="policy_added")] == ["policy_added"]


def test_naive_clock_is_refused(db_url):
    store = ReviewStore(db_url, clock=lambda: datetime(2026, 1, 1))
    try:
        with pytest.raises(StoreError, match="naive datetime"):
            store.add_user("alice", "reviewer", actor="admin")
    finally:
        store.close()


def test_audited_accuracy_is_weighted_by_each_items_audit_rate(store, policy, new_item):
    """Two audits drawn at rate 0.5 (both right) and one at 0.1 (wrong): the item audited at
    0.1 stands for ten auto items, the others for two each, so the accuracy is 4/14, not 2/3;
    the interval is Clopper-Pearson on Kish's effective sample size."""
    from dataclasses import replace

    from howsure.service.app import audit_accuracy, clopper_pearson
    from howsure.service.audit import weighted_audit

    drawn = [(0.5, policy.body["labels"][0]), (0.5, policy.body["labels"][0]), (0.1, policy.body["labels"][1])]
    records = store.add_items([replace(new_item(policy, text=f"auto {k}", confidence=0.95, audit=True), audit_rate=rate)
                               for k, (rate, _) in enumerate(drawn)], actor="client")
    assert [r.audit_rate for r in records] == [0.5, 0.5, 0.1]
    for record, (_, label) in zip(records, drawn):
        store.claim_next("rita")
        store.submit_review(record.id, "rita", label)
    weighted = weighted_audit(store, policy.version)
    assert weighted.weighted and (weighted.reviewed, weighted.correct) == (3, 2)
    assert weighted.accuracy == pytest.approx(4 / 14)
    n_eff = 14**2 / (4 + 4 + 100)
    assert weighted.effective_n == pytest.approx(n_eff)
    result = audit_accuracy(store.stats(policy_version=policy.version), 0.8, weighted=weighted)
    assert result.accuracy == pytest.approx(4 / 14) and (result.reviewed, result.correct) == (3, 2)
    assert (result.interval.low, result.interval.high) == pytest.approx(clopper_pearson(4 / 14 * n_eff, n_eff))
    # One audited item without its rate (stored before revision 0004): the plain proportion.
    [old] = store.add_items([new_item(policy, text="old", confidence=0.95, audit=True)], actor="client")
    store.claim_next("rita")
    store.submit_review(old.id, "rita", policy.body["labels"][0])
    plain = weighted_audit(store, policy.version)
    assert not plain.weighted and plain.accuracy == 3 / 4 and plain.effective_n == 4


def test_an_audit_item_cannot_have_been_drawn_at_rate_zero(store, policy, new_item):
    from dataclasses import replace

    with pytest.raises(StoreError, match="audit_rate 0"):
        store.add_items([replace(new_item(policy, confidence=0.95, audit=True), audit_rate=0.0)], actor="c")
    with pytest.raises(StoreError, match=r"audit_rate must be null or a number in \[0, 1\], got 1.5"):
        store.add_items([replace(new_item(policy, confidence=0.95), audit_rate=1.5)], actor="c")
