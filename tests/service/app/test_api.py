"""The JSON API on the tiny model, against SQLite and PostgreSQL (``db_url``): classification
and routing, micro-batching, audit sampling, auth and roles, limits, the review queue,
idempotent retries, policies, stats, JSON errors and the OpenAPI document."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(120)


def test_classify_one_and_many_decides_with_the_active_policy(make_service, tiny_backend):
    env = make_service(threshold=0.6)
    single = env.client.post("/v1/classify", json={"text": "A gorgeous, witty movie.", "id": "r-1"},
                             headers=env.headers("cody"))
    assert single.status_code == 200, single.text
    [one] = single.json()["items"]
    many = env.classify(["The worst film of the year.", "dull and stupid", "quite good"])
    assert len(many) == 3 and len({item["item_id"] for item in many + [one]}) == 4

    # The answer is exactly what the backend and the stored policy give for that text.
    from howsure.core.task import Task

    policy = env.policy.to_policy()
    raw = tiny_backend.label_scores(Task.from_dict(policy.task), ["A gorgeous, witty movie."])[0]
    [expected] = policy.decide(np.asarray([raw.probabilities]))
    assert one["label"] == expected.label
    assert one["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
    assert one["decision"] == ("auto" if expected.confidence >= 0.6 else "review")
    assert one["external_id"] == "r-1" and one["policy_version"] == env.policy.version
    assert one["policy_id"] == env.policy.policy_id
    for item in many + [one]:
        assert sum(item["probabilities"].values()) == pytest.approx(1.0)
        assert item["confidence"] == max(item["probabilities"].values())
        stored = env.store.get_item(item["item_id"])  # acknowledged means stored
        assert stored.prediction == item["label"] and stored.created_by == "cody"
        assert stored.status == ("queued" if item["decision"] == "review" else "done")


@pytest.mark.parametrize("threshold, decision, status", [(0.0, "auto", "done"), (None, "review", "queued")])
def test_threshold_routes_items(make_service, threshold, decision, status):
    env = make_service(threshold=threshold)
    items = env.classify(["one text", "another text"])
    assert {item["decision"] for item in items} == {decision}
    assert {env.store.get_item(item["item_id"]).status for item in items} == {status}
    assert env.store.queue_length() == (2 if status == "queued" else 0)


def test_audit_rate_queues_a_share_of_auto_items(make_service):
    env = make_service(threshold=0.0, audit_rate=0.5, seed=3)
    items = env.classify([f"text number {i}" for i in range(60)])
    reasons = [env.store.get_item(item["item_id"]).queue_reason for item in items]
    audited = reasons.count("audit")
    assert 15 <= audited <= 45 and set(reasons) <= {"audit", None}
    assert env.store.stats()["audit_sampled"] == audited
    assert {item["decision"] for item in items} == {"auto"}  # the client is not told which are audited
    # Every auto item keeps the rate it was drawn at, audited or not (recalibration weights by it).
    assert {env.store.get_item(item["item_id"]).audit_rate for item in items} == {0.5}


def test_review_decisions_store_no_audit_rate(make_service):
    env = make_service(threshold=None, audit_rate=0.5)
    [item] = env.classify(["unsure"])
    assert env.store.get_item(item["item_id"]).audit_rate is None


def test_concurrent_requests_share_forward_passes(make_service):
    env = make_service(threshold=0.9, max_batch=16, max_wait_ms=200)
    results: list = [None] * 12

    def send(i: int) -> None:
        results[i] = env.client.post("/v1/classify", json={"text": f"text {i}"}, headers=env.headers("cody"))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.status_code == 200 for r in results)
    assert len({r.json()["items"][0]["item_id"] for r in results}) == 12
    stats = env.app.state.service.batcher.stats
    assert stats.items == 12 and stats.batches < 12 and stats.largest > 1


def test_the_active_policy_is_read_once_per_forward_pass_not_per_request(make_service, monkeypatch):
    env = make_service(threshold=0.9, max_batch=16, max_wait_ms=200)
    service = env.app.state.service
    reads = []
    read_active = service.store.active_policy
    monkeypatch.setattr(service.store, "active_policy", lambda: reads.append(1) or read_active())
    before = service.batcher.stats.batches
    threads = [threading.Thread(target=env.classify, args=([f"text {i}"],)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert service.batcher.stats.items == 12
    assert len(reads) == service.batcher.stats.batches - before < 12


def test_a_policy_added_after_a_503_serves_the_next_request(make_service, policy_dict_factory):
    env = make_service(policy=False)
    assert env.client.post("/v1/classify", json={"text": "x"}, headers=env.headers("cody")).status_code == 503
    added = env.store.add_policy(policy_dict_factory(threshold=0.0), actor="test")
    [item] = env.classify(["now there is one"])
    assert item["policy_version"] == added.version and item["decision"] == "auto"


def test_idempotent_retries_return_the_stored_item(make_service):
    env = make_service(threshold=None)
    [first] = env.classify(["retry me"], request_id="req-1")
    [again] = env.classify(["retry me"], request_id="req-1")
    assert again["item_id"] == first["item_id"]
    assert env.store.stats()["items"] == 1
    # The same key for another text is a conflict.
    other_text = env.client.post("/v1/classify", json={"text": "different", "request_id": "req-1"},
                                 headers=env.headers("cody"))
    assert other_text.status_code == 409
    assert "retry me" not in other_text.text and other_text.json()["error"]["code"] == "conflict"
    assert env.store.stats()["items"] == 1


def test_request_ids_are_per_client(make_service):
    """Two clients may use the same key: each gets its own item, neither sees the other's, and
    each one's retry is idempotent."""
    env = make_service(threshold=None)
    [cody] = env.classify(["cody's text"], user="cody", request_id="order-1")
    [carl] = env.classify(["carl's text"], user="carl", request_id="order-1")
    assert carl["item_id"] != cody["item_id"]
    [cody_again] = env.classify(["cody's text"], user="cody", request_id="order-1")
    [carl_again] = env.classify(["carl's text"], user="carl", request_id="order-1")
    assert (cody_again["item_id"], carl_again["item_id"]) == (cody["item_id"], carl["item_id"])
    assert env.store.stats()["items"] == 2
    assert env.client.get(f"/v1/items/{carl['item_id']}", headers=env.headers("cody")).status_code == 404


# ---------------------------------------------------------------------------- auth
def test_no_token_or_unknown_token_is_401(make_service):
    env = make_service()
    for headers in ({}, {"Authorization": "Bearer hs_nope"}, {"Authorization": "Basic abc"}):
        response = env.client.post("/v1/classify", json={"text": "x"}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("user, method, path, body", [
    ("rita", "post", "/v1/classify", {"text": "x"}),
    ("cody", "get", "/v1/queue/next", None),
    ("cody", "post", "/v1/reviews", {"item_id": 1, "label": "positive"}),
    ("cody", "get", "/v1/stats", None),
    ("cody", "get", "/v1/policies", None),
    ("rita", "post", "/v1/policies/1/activate", None),
])
def test_wrong_role_is_403(make_service, user, method, path, body):
    env = make_service()
    response = getattr(env.client, method)(path, headers=env.headers(user), **({"json": body} if body else {}))
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden" and user in error["message"]


def test_admin_may_do_everything_and_revoked_tokens_stop_working(make_service):
    env = make_service(threshold=None)
    [item] = env.classify(["admin text"], user="ann")
    claimed = env.client.get("/v1/queue/next", headers=env.headers("ann")).json()["item"]
    assert claimed["item_id"] == item["item_id"]
    assert env.client.post("/v1/reviews", json={"item_id": item["item_id"], "label": "positive"},
                           headers=env.headers("ann")).status_code == 201
    env.store.revoke_token(env.tokens["cody"], actor="test")
    assert env.client.post("/v1/classify", json={"text": "x"}, headers=env.headers("cody")).status_code == 401


# ---------------------------------------------------------------------------- limits and validation
def test_body_over_the_limit_is_413(make_service):
    env = make_service(max_body_bytes=2_000)
    big = {"items": [{"text": "x" * 500} for _ in range(5)]}
    response = env.client.post("/v1/classify", json=big, headers=env.headers("cody"))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large" and "2000 bytes" in response.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit is counted while the body streams in
        for _ in range(10):
            yield b"x" * 500

    streamed = env.client.post("/v1/classify", content=chunks(),
                               headers={**env.headers("cody"), "Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert env.store.stats()["items"] == 0


@pytest.mark.parametrize("body, where", [
    ({"items": [{"text": "a"}] * 4}, "items"),
    ({"text": "x" * 101}, "text"),
    ({"text": "   "}, "blank"),
    ({"text": "nul \u0000 inside"}, "NUL"),
    (b'{"text": "lone \\ud800 surrogate"}', "unicode"),  # valid JSON, not valid Unicode
    ({"text": "ok", "colour": "red"}, "colour"),
    ({"items": []}, "items"),
    ({"text": "ok", "request_id": ""}, "request_id"),
    ([1, 2], "body"),
])
def test_invalid_input_is_422_with_a_message(make_service, body, where):
    env = make_service(max_items_per_request=3, max_text_chars=100)
    if isinstance(body, bytes):
        response = env.client.post("/v1/classify", content=body,
                                   headers={**env.headers("cody"), "Content-Type": "application/json"})
    else:
        response = env.client.post("/v1/classify", json=body, headers=env.headers("cody"))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and where in response.text
    assert env.store.stats()["items"] == 0


def test_malformed_json_is_422_not_500(make_service):
    env = make_service()
    response = env.client.post("/v1/classify", content=b"{not json",
                               headers={**env.headers("cody"), "Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_input"


def test_json_errors_for_unknown_routes_and_methods(make_service):
    env = make_service()
    missing = env.client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = env.client.get("/v1/classify", headers=env.headers("cody"))
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert env.client.get("/v1/items/0", headers=env.headers("rita")).status_code == 422
    assert env.client.get(f"/v1/items/{2**40}", headers=env.headers("rita")).status_code == 422


def test_a_failing_database_is_503_without_its_details(make_service):
    """A database failure is the server's trouble (503), told without the driver's message
    (it names the database); the request's own mistakes stay 4xx. Nothing stored is lost."""
    env = make_service()
    (item,) = env.classify(["A gorgeous, witty movie."])
    url = f"/v1/items/{item['item_id']}"
    with env.store.engine.begin() as connection:  # the table disappears under the service
        connection.exec_driver_sql("ALTER TABLE items RENAME TO items_gone")
    try:
        response = env.client.get(url, headers=env.headers("rita"))
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "database_unavailable"
        assert "items" not in error["message"] and "howsure" not in error["message"]
        assert env.client.get(f"/v1/items/{2**40}", headers=env.headers("rita")).status_code == 422
    finally:
        with env.store.engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE items_gone RENAME TO items")
    assert env.client.get(url, headers=env.headers("rita")).json()["text"] == "A gorgeous, witty movie."


def test_no_active_policy_is_503(make_service):
    env = make_service(policy=False)
    response = env.client.post("/v1/classify", json={"text": "x"}, headers=env.headers("cody"))
    assert response.status_code == 503 and "no policy is active" in response.json()["error"]["message"]
    health = env.client.get("/healthz").json()
    assert health["status"] == "ok" and health["policy_version"] is None


# ---------------------------------------------------------------------------- the review queue
def test_claim_review_and_conflicts(make_service):
    env = make_service(threshold=None)
    a, b = env.classify(["first queued", "second queued"])
    rita = env.client.get("/v1/queue/next", headers=env.headers("rita")).json()
    rex = env.client.get("/v1/queue/next", headers=env.headers("rex")).json()
    assert rita["item"]["item_id"] == a["item_id"] and rex["item"]["item_id"] == b["item_id"]
    assert rita["item"]["text"] == "first queued" and rita["item"]["status"] == "claimed"
    # Reloading gives the same item back, not a new one.
    again = env.client.get("/v1/queue/next", headers=env.headers("rita")).json()
    assert again["item"]["item_id"] == a["item_id"]

    stolen = env.client.post("/v1/reviews", json={"item_id": a["item_id"], "label": "positive"},
                             headers=env.headers("rex"))
    assert stolen.status_code == 409 and stolen.json()["error"]["code"] == "conflict"
    bad_label = env.client.post("/v1/reviews", json={"item_id": a["item_id"], "label": "maybe"},
                                headers=env.headers("rita"))
    assert bad_label.status_code == 400 and "maybe" in bad_label.json()["error"]["message"]
    unknown = env.client.post("/v1/reviews", json={"item_id": 99999, "label": "positive"}, headers=env.headers("rita"))
    assert unknown.status_code == 404

    ok = env.client.post("/v1/reviews", json={"item_id": a["item_id"], "label": "positive"},
                         headers=env.headers("rita"))
    assert ok.status_code == 201
    review = ok.json()
    assert review["reviewer"] == "rita" and review["label"] == "positive" and review["source"] == "review"
    twice = env.client.post("/v1/reviews", json={"item_id": a["item_id"], "label": "negative"},
                            headers=env.headers("rita"))
    assert twice.status_code == 409 and "already reviewed" in twice.json()["error"]["message"]
    assert env.store.get_review(a["item_id"]).label == "positive"

    item = env.client.get(f"/v1/items/{a['item_id']}", headers=env.headers("rita")).json()
    assert item["status"] == "reviewed" and item["review"]["label"] == "positive"
    after = env.client.get("/v1/queue/next", headers=env.headers("rita")).json()
    assert after["item"] is None and after["reviewed_by_you"] == 1 and after["queue_length"] == 0


def test_skip_puts_the_item_back_at_the_end(make_service):
    env = make_service(threshold=None)
    a, b = env.classify(["skip me", "then me"])
    held = env.client.get("/v1/queue/next", headers=env.headers("rita")).json()["item"]
    assert held["item_id"] == a["item_id"]
    skipped = env.client.post(f"/v1/items/{a['item_id']}/skip", headers=env.headers("rita"))
    assert skipped.status_code == 200 and skipped.json()["status"] == "queued"
    assert env.client.get("/v1/queue/next", headers=env.headers("rita")).json()["item"]["item_id"] == b["item_id"]
    not_held = env.client.post(f"/v1/items/{a['item_id']}/skip", headers=env.headers("rex"))
    assert not_held.status_code == 409
    assert env.client.post("/v1/items/424242/skip", headers=env.headers("rex")).status_code == 404


def test_clients_read_only_their_own_items(make_service):
    env = make_service(threshold=0.0)
    [mine] = env.classify(["cody's text"], user="cody")
    assert env.client.get(f"/v1/items/{mine['item_id']}", headers=env.headers("cody")).status_code == 200
    theirs = env.client.get(f"/v1/items/{mine['item_id']}", headers=env.headers("carl"))
    assert theirs.status_code == 404 and "cody's text" not in theirs.text


# ---------------------------------------------------------------------------- policies and stats
def test_policy_history_and_rollback(make_service, policy_dict_factory):
    env = make_service(threshold=0.0)
    newer = env.store.add_policy(policy_dict_factory(threshold=None), actor="test", note="stricter")
    [item] = env.classify(["under v2"])
    assert item["policy_version"] == newer.version and item["decision"] == "review"

    history = env.client.get("/v1/policies", headers=env.headers("rita")).json()
    assert [p["version"] for p in history] == [newer.version, env.policy.version]
    assert history[0]["active"] and history[0]["note"] == "stricter" and history[1]["target_accuracy"] == 0.8
    body = env.client.get(f"/v1/policies/{env.policy.version}", headers=env.headers("rita")).json()
    assert body["policy_id"] == env.policy.policy_id and body["threshold"] == 0.0

    rolled = env.client.post(f"/v1/policies/{env.policy.version}/activate", headers=env.headers("ann"))
    assert rolled.status_code == 200 and rolled.json()["active"]
    [item] = env.classify(["under v1 again"])
    assert item["policy_version"] == env.policy.version and item["decision"] == "auto"
    assert env.client.post("/v1/policies/77/activate", headers=env.headers("ann")).status_code == 404
    assert env.client.get("/v1/policies/77", headers=env.headers("ann")).status_code == 404


def test_stats_report_audited_accuracy_with_its_interval(make_service):
    env = make_service(threshold=0.0, audit_rate=1.0)
    items = env.classify([f"audit me {i}" for i in range(6)])
    for i in range(6):
        held = env.client.get("/v1/queue/next", headers=env.headers("rita")).json()["item"]
        # Agree with the model on the first five, disagree on the last.
        label = held["label"] if i < 5 else next(l for l in held["probabilities"] if l != held["label"])
        assert env.client.post("/v1/reviews", json={"item_id": held["item_id"], "label": label},
                               headers=env.headers("rita")).status_code == 201
    stats = env.client.get("/v1/stats", headers=env.headers("rita")).json()
    audit = stats["audit"]
    assert (audit["reviewed"], audit["correct"]) == (6, 5)
    assert audit["accuracy"] == pytest.approx(5 / 6)
    from scipy.stats import beta

    assert audit["interval"]["low"] == pytest.approx(beta.ppf(0.025, 5, 2))
    assert audit["interval"]["high"] == pytest.approx(beta.ppf(0.975, 6, 1))
    assert audit["target"] == 0.8 and audit["verdict"] == "consistent_with_target"
    assert stats["overall"]["automation_rate"] == 1.0 and stats["overall"]["items"] == len(items)
    assert stats["batching"]["items"] == 6


@pytest.mark.parametrize("correct, n, target, verdict", [
    (0, 0, 0.9, "no_data"), (50, 100, 0.9, "below_target"), (1000, 1000, 0.9, "meets_target"),
    (9, 10, 0.9, "consistent_with_target"),
])
def test_audit_verdicts(correct, n, target, verdict):
    from howsure.service.app import audit_accuracy

    result = audit_accuracy({"audit_reviewed": n, "audit_correct": correct}, target)
    assert result.verdict == verdict


def test_clopper_pearson_known_values():
    from howsure.errors import DataError
    from howsure.service.app import clopper_pearson

    low, high = clopper_pearson(0, 10)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 10))
    low, high = clopper_pearson(10, 10)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 10))
    with pytest.raises(DataError, match="successes=11, n=10"):
        clopper_pearson(11, 10)


def test_openapi_documents_auth_limits_and_errors(make_service):
    env = make_service(max_text_chars=1234, max_items_per_request=7)
    spec = env.client.get("/openapi.json").json()
    assert {"/v1/classify", "/v1/queue/next", "/v1/reviews", "/v1/items/{item_id}", "/v1/items/{item_id}/skip",
            "/v1/stats", "/v1/policies", "/v1/policies/{version}/activate", "/healthz"} <= set(spec["paths"])
    assert "/review" not in spec["paths"]  # pages are not API
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    schemas = spec["components"]["schemas"]
    assert schemas["ClassifyItem"]["properties"]["text"]["maxLength"] == 1234
    assert schemas["ClassifyBatch"]["properties"]["items"]["maxItems"] == 7
    classify = spec["paths"]["/v1/classify"]["post"]
    assert {"401", "403", "413", "422", "429"} <= set(classify["responses"])


def test_a_task_whose_labels_are_not_alphabetical_serves(make_service, store, policy_dict_factory):
    env = make_service()
    body = policy_dict_factory(labels=("positive", "negative"))
    record = store.add_policy(body, actor="test")
    assert list(record.body["task"]["labels"]) == ["positive", "negative"]
    [item] = env.classify(["order matters"])
    assert item["policy_version"] == record.version
