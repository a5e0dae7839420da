"""A database another process keeps locked: requests give up within seconds with 503 and
Retry-After, /healthz answers at once, /readyz says the database is down, and once the lock
is gone everything works again with nothing stored lost (on SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

REQUESTS_GIVE_UP_WITHIN_S = 5.0
HEALTHZ_WITHIN_S = 1.0


def timed(client: httpx.Client, method: str, path: str, **kwargs):
    started = time.monotonic()
    response = client.request(method, path, **kwargs)
    return response, time.monotonic() - started


def test_a_locked_database_answers_503_fast_and_loses_nothing(live_service, lock_database):
    env, url = live_service(threshold=None)
    before = env.classify(["first queued", "second queued", "third queued"])
    [held] = [env.client.get("/v1/queue/next", headers=env.headers("rex")).json()["item"]]
    items_before, reviews_before = env.store.stats()["items"], env.store.stats()["reviews"]

    with lock_database(env.store), ThreadPoolExecutor(max_workers=48) as pool, \
            httpx.Client(base_url=url, timeout=60) as other:
        calls = [pool.submit(timed, other, "GET", "/v1/queue/next", headers=env.headers("rita"))
                 for _ in range(40)]
        calls += [pool.submit(timed, other, "POST", "/v1/classify", json={"text": f"during the lock {k}"},
                              headers=env.headers("cody")) for k in range(4)]
        calls.append(pool.submit(timed, other, "POST", "/v1/reviews", headers=env.headers("rex"),
                                 json={"item_id": held["item_id"], "label": "positive"}))
        time.sleep(0.5)  # the requests above are waiting for the lock now
        health, health_s = timed(env.client, "GET", "/healthz")
        ready, ready_s = timed(env.client, "GET", "/readyz")
        results = [call.result() for call in calls]

    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health_s < HEALTHZ_WITHIN_S, health_s
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "database_unavailable"
    assert int(ready.headers["Retry-After"]) > 0 and ready_s < 4
    for response, seconds in results:
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "database_unavailable"
        assert int(response.headers["Retry-After"]) > 0
        assert seconds < REQUESTS_GIVE_UP_WITHIN_S, (response.request.url, seconds)

    # The lock is gone: every path works again and nothing stored before was lost.
    assert env.client.get("/readyz").json() == {"status": "ready", "database": "ok",
                                                "policy_version": env.policy.version}
    stats = env.store.stats()
    assert (stats["items"], stats["reviews"]) == (items_before, reviews_before)
    review = env.client.post("/v1/reviews", json={"item_id": held["item_id"], "label": "positive"},
                             headers=env.headers("rex"))
    assert review.status_code == 201, review.text
    claimed = env.client.get("/v1/queue/next", headers=env.headers("rita")).json()["item"]
    assert claimed["item_id"] in {item["item_id"] for item in before}
    [after] = env.classify(["after the lock"])
    assert env.store.stats()["items"] == items_before + 1
    for item in before + [after]:
        assert env.client.get(f"/v1/items/{item['item_id']}", headers=env.headers("rita")).status_code == 200
