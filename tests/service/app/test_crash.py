"""kill -9 of `howsure serve` while classify requests are in flight, then a restart: every
acknowledged item is stored exactly once, and retrying every request with its request_id
stores nothing twice. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.timeout(240)

CLIENTS = 8
ITEMS_PER_REQUEST = 3


def stored_request_ids(store) -> dict[str, list[int]]:
    with store.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT request_id, id FROM items")).all()
    out: dict[str, list[int]] = {}
    for request_id, item_id in rows:
        out.setdefault(request_id, []).append(item_id)
    return out


def test_kill_9_mid_batch_loses_no_acknowledged_item(store, user_tokens, serve_process):
    tokens = user_tokens
    headers = {"Authorization": f"Bearer {tokens['cody']}"}
    # Batches wait up to 40 ms to fill, so at any moment most requests are inside the server.
    server = serve_process(store.url, 0.9, "--max-wait-ms", "40").start()

    acknowledged: dict[str, int] = {}
    attempted: dict[str, str] = {}  # request_id -> text
    cut_off: set[str] = set()  # sent, and the connection died before the response came
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:
            k = 0
            while not stop.is_set():
                items = [{"text": f"client {number} request {k} item {j}", "request_id": f"c{number}-r{k}-i{j}"}
                         for j in range(ITEMS_PER_REQUEST)]
                with lock:
                    attempted.update({item["request_id"]: item["text"] for item in items})
                try:
                    response = http.post("/v1/classify", json={"items": items})
                except httpx.ConnectError:
                    return  # the server was gone before this request reached it
                except httpx.HTTPError:
                    with lock:  # the server had this request when it died
                        cut_off.update(item["request_id"] for item in items)
                    return
                if response.status_code != 200:
                    return
                with lock:
                    for item in response.json()["items"]:
                        acknowledged[item["request_id"]] = item["item_id"]
                k += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(acknowledged) >= 60
    in_flight = set(attempted) - set(acknowledged)
    # Every client's last request fails once the server is gone, so "some request was not
    # acknowledged" proves nothing; a connection that died after the request was sent does.
    assert cut_off, "no request was inside the server when it was killed"
    assert cut_off <= in_flight

    # Every acknowledged item is there, once, under the id the client was given.
    rows = stored_request_ids(store)
    print(f"acknowledged {len(acknowledged)}, in flight {len(in_flight)}, cut off {len(cut_off)}, "
          f"of those stored before the kill {len(set(rows) & in_flight)}")
    for request_id, item_id in acknowledged.items():
        assert rows.get(request_id) == [item_id], request_id
    assert set(rows) <= set(attempted)

    # Restart on the same database and retry everything, acknowledged or not.
    restarted = serve_process(store.url, 0.9).start()
    with httpx.Client(base_url=restarted.url, headers=headers, timeout=30) as http:
        ordered = sorted(attempted)
        for start in range(0, len(ordered), 50):
            chunk = ordered[start:start + 50]
            response = http.post("/v1/classify", json={"items": [
                {"text": attempted[request_id], "request_id": request_id} for request_id in chunk]})
            assert response.status_code == 200, response.text
            for request_id, item in zip(chunk, response.json()["items"]):
                assert item["request_id"] == request_id
                if request_id in acknowledged:
                    assert item["item_id"] == acknowledged[request_id]
    rows = stored_request_ids(store)
    assert set(rows) == set(attempted)
    assert all(len(ids) == 1 for ids in rows.values())
    assert store.stats()["items"] == len(attempted)
