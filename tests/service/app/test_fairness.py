"""One client cannot monopolise the model: a flood of long texts leaves another client's
one-text requests fast, the queue is bounded (429 with Retry-After), over-long input is
refused by the documented rule (422 per text, 413 per request), and the queued texts of a
client that disconnected are never scored.

The model is the tiny random one behind `SlowBackend`, which sleeps a fixed time per text
token as a real model on a small CPU takes, so queues form as they do in production."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)

LONG = "A gorgeous, witty, seductive movie. The worst film of the year, dull and stupid. " * 6


class SlowBackend:
    """``backend`` taking ``seconds_per_token`` per text token, recording the texts it saw;
    ``gate`` (when set) holds every call until it is opened."""

    def __init__(self, backend: Any, seconds_per_token: float = 0.0) -> None:
        self.backend = backend
        self.tokenizer = backend.tokenizer
        self.model_id = backend.model_id
        self.seconds_per_token = seconds_per_token
        self.seen: list[str] = []
        self.gate: threading.Event | None = None
        self.calls = threading.Semaphore(0)

    def label_scores(self, task: Any, texts: list[str], **kwargs: Any) -> list:
        self.calls.release()
        if self.gate is not None:
            assert self.gate.wait(60)
        self.seen.extend(texts)
        tokens = sum(len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"])
        time.sleep(self.seconds_per_token * tokens)
        return self.backend.label_scores(task, texts, **kwargs)


@pytest.fixture
def slow_service(store, tiny_backend, policy_dict_factory, thread_server):
    """``slow_service(seconds_per_token, **create_app_kwargs) -> (url, tokens, backend, service)``:
    uvicorn on a real socket in front of a `SlowBackend`."""
    from howsure.service.app import create_app

    tokens = {}
    for name, role in (("cody", "client"), ("carl", "client")):
        store.add_user(name, role, actor="test")
        tokens[name] = store.create_token(name, actor="test")
    store.add_policy(policy_dict_factory(threshold=None), actor="test")

    def make(seconds_per_token: float = 0.0, **kwargs: Any):
        backend = SlowBackend(tiny_backend, seconds_per_token)
        app = create_app(store, backend, audit_rate=0.0, seed=0, session_secret="test-secret-of-enough-length",
                         **kwargs)
        return thread_server(app).url, tokens, backend, app.state.service

    return make


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_count(backend: Any, text: str) -> int:
    return len(backend.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_a_flood_of_long_texts_leaves_another_clients_one_text_requests_fast(slow_service):
    url, tokens, backend, service = slow_service(0.001, max_batch_tokens=300, max_text_tokens=200,
                                                 max_request_tokens=4000, max_client_tokens=20000)
    per_text = token_count(backend, LONG)
    assert 60 < per_text <= 200  # a batch holds a few flood texts: about 0.1 s each
    stop = threading.Event()
    flood_done = []

    def flood() -> None:  # carl sends 16 long texts at a time, from 4 connections at once
        with httpx.Client(base_url=url, headers=headers(tokens["carl"]), timeout=60) as client:
            while not stop.is_set():
                response = client.post("/v1/classify", json={"items": [{"text": LONG}] * 16})
                assert response.status_code == 200, response.text
                flood_done.append(1)

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        while service.batcher.waiting < 32:  # the flood has queued well over a batch's worth
            time.sleep(0.01)
        latencies = []
        with httpx.Client(base_url=url, headers=headers(tokens["cody"]), timeout=60) as client:
            for _ in range(15):
                started = time.perf_counter()
                response = client.post("/v1/classify", json={"text": "A gorgeous movie."})
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
        queued_at_end = service.batcher.waiting
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    # FIFO would put each of cody's texts behind the flood's queue (about 64 texts x 0.1 s).
    assert max(latencies) < 2.0, latencies
    assert statistics.median(latencies) < 1.0, latencies
    assert queued_at_end >= 16 and flood_done  # the flood was still queued and being served meanwhile


def test_queue_full_is_429_with_retry_after_and_other_clients_still_get_in(slow_service):
    url, tokens, backend, service = slow_service(0.0, max_text_tokens=200, max_request_tokens=400,
                                                 max_client_tokens=400, max_queue_tokens=800)
    backend.gate = threading.Event()
    per_text = token_count(backend, LONG)
    results = {}

    def send(name: str, texts: list[str]) -> None:
        response = httpx.post(f"{url}/v1/classify", json={"items": [{"text": t} for t in texts]},
                              headers=headers(tokens[name]), timeout=60)
        results[name] = response

    cody_texts = [LONG] * (400 // per_text)  # cody's share, nearly all of it
    first = threading.Thread(target=send, args=("cody", cody_texts))
    first.start()
    assert backend.calls.acquire(timeout=30)  # cody's texts are in the model (held by the gate)
    try:
        again = httpx.post(f"{url}/v1/classify", json={"text": LONG}, headers=headers(tokens["cody"]), timeout=30)
        assert again.status_code == 429, again.text
        assert again.json()["error"]["code"] == "too_many_requests"
        assert "this client's share (400)" in again.json()["error"]["message"]
        assert int(again.headers["Retry-After"]) >= 1
        other = threading.Thread(target=send, args=("carl", [LONG]))  # carl has room
        other.start()
    finally:
        backend.gate.set()
    first.join(timeout=60)
    other.join(timeout=60)
    assert results["cody"].status_code == 200 and results["carl"].status_code == 200
    assert service.batcher.stats.refused == 1


def test_over_long_texts_and_requests_are_refused_naming_the_limit(slow_service):
    url, tokens, backend, _ = slow_service(0.0, max_text_tokens=50, max_request_tokens=120)
    auth = headers(tokens["cody"])
    long_text = "word " * 200
    one = httpx.post(f"{url}/v1/classify", json={"text": long_text}, headers=auth)
    assert one.status_code == 422, one.text
    count = token_count(backend, long_text)
    assert one.json()["error"]["message"].startswith(
        f"body.text has {count} tokens, over the limit of 50 tokens per text")
    many = httpx.post(f"{url}/v1/classify", json={"items": [{"text": "fine"}, {"text": long_text}]}, headers=auth)
    assert many.status_code == 422 and "body.items.1.text has" in many.json()["error"]["message"]
    short = "A gorgeous, witty, seductive movie."
    total = httpx.post(f"{url}/v1/classify", json={"items": [{"text": short}] * 20}, headers=auth)
    assert total.status_code == 413, total.text
    assert total.json()["error"]["code"] == "too_large"
    assert f"{20 * token_count(backend, short)} tokens in all, over the limit of 120" in total.json()["error"]["message"]
    assert backend.seen == []  # nothing refused reached the model


def test_a_disconnected_clients_queued_texts_are_not_scored(slow_service, store):
    url, tokens, backend, service = slow_service(0.0)
    backend.gate = threading.Event()
    blocker = threading.Thread(target=httpx.post, args=(f"{url}/v1/classify",),
                               kwargs={"json": {"text": "first"}, "headers": headers(tokens["carl"]), "timeout": 60})
    blocker.start()
    try:
        assert backend.calls.acquire(timeout=30)  # carl's text holds the model
        gone = [{"text": f"never scored {i}"} for i in range(5)]
        with pytest.raises(httpx.ReadTimeout):  # cody gives up and closes the connection
            httpx.post(f"{url}/v1/classify", json={"items": gone}, headers=headers(tokens["cody"]), timeout=0.5)
        deadline = time.monotonic() + 10
        while service.batcher.stats.dropped < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert service.batcher.stats.dropped == 5
        assert service.batcher.waiting == 0
    finally:
        backend.gate.set()
    blocker.join(timeout=60)
    assert not any(text.startswith("never scored") for text in backend.seen)
    assert store.stats()["items"] == 1  # carl's text only


@pytest.mark.parametrize("option, value, match", [
    ("max_batch_tokens", 0, "max_batch_tokens must be an integer >= 1, got 0"),
    ("max_batch_tokens", "many", "max_batch_tokens must be an integer >= 1, got 'many'"),
    ("max_client_tokens", 0, "max_client_tokens must be an integer >= 1, got 0"),
    ("max_request_tokens", 20000, r"max_request_tokens \(20000\) must not be over max_client_tokens \(16384\)"),
    ("auth_failures", 0, "auth_failures must be an integer >= 1, got 0"),
    ("auth_window_s", 0, "auth_window_s must be > 0, got 0"),
])
def test_bad_limits_are_refused_under_their_own_names(store, tiny_backend, option, value, match):
    from howsure.errors import DataError
    from howsure.service.app import create_app

    with pytest.raises(DataError, match=match):
        create_app(store, tiny_backend, **{option: value})
