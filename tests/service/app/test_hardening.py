"""Every response says nosniff; API answers say no-store and carry a CSP that loads nothing;
the API docs pages (which load a CDN's script) are off unless asked for; `howsure serve`
warns when it listens beyond loopback without Secure cookies."""

from __future__ import annotations

import pytest

from howsure.service.hardening import API_CSP, DOCS_CSP, PAGE_CSP, exposure_warning


def test_json_answers_are_not_cached_or_sniffed(make_service):
    env = make_service()
    answers = [
        env.client.get("/healthz"),
        env.client.get("/v1/stats", headers=env.headers("rita")),
        env.client.get("/v1/stats"),  # 401
        env.client.get("/nowhere"),  # 404
        env.client.post("/v1/classify", json={"text": "A gorgeous movie."}, headers=env.headers("cody")),
        env.client.get("/openapi.json"),
    ]
    for response in answers:
        assert response.headers["content-type"].startswith("application/json"), response.url
        assert response.headers["Cache-Control"] == "no-store", response.url
        assert response.headers["X-Content-Type-Options"] == "nosniff", response.url
        assert response.headers["Content-Security-Policy"] == API_CSP, response.url


def test_a_body_over_the_limit_gets_the_headers_too(make_service):
    env = make_service(max_body_bytes=100)
    response = env.client.post("/v1/classify", content=b"x" * 200, headers=env.headers("cody"))
    assert response.status_code == 413
    assert response.headers["Cache-Control"] == "no-store" and response.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_keep_their_own_policy_and_static_files_may_be_cached(make_service):
    env = make_service()
    login = env.client.get("/login")
    assert login.headers["Content-Security-Policy"] == PAGE_CSP
    assert login.headers["Cache-Control"] == "no-store"
    static = env.client.get("/static/style.css")
    assert static.status_code == 200
    assert static.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" not in static.headers.get("Cache-Control", "")


def test_api_docs_are_off_unless_asked_for(make_service):
    env = make_service()
    for path in ("/docs", "/redoc"):
        assert env.client.get(path).status_code == 404
    with_docs = make_service(api_docs=True)
    for path in ("/docs", "/redoc"):
        page = with_docs.client.get(path)
        assert page.status_code == 200 and "cdn.jsdelivr.net" in page.text
        assert page.headers["Content-Security-Policy"] == DOCS_CSP


@pytest.mark.parametrize("host, secure, warns", [
    ("127.0.0.1", False, False), ("localhost", False, False), ("::1", False, False), ("127.0.0.2", False, False),
    ("0.0.0.0", False, True), ("::", False, True), ("192.168.1.4", False, True), ("review.example.org", False, True),
    ("0.0.0.0", True, False),
])
def test_serving_beyond_loopback_without_secure_cookies_warns(host, secure, warns):
    warning = exposure_warning(host, secure)
    assert (warning is not None) == warns
    if warns:
        assert f"listening on {host}" in warning and "--secure-cookies" in warning and "\n" not in warning


def test_howsure_serve_prints_the_warning(store, serve_process, tmp_path):
    server = serve_process(store.url, 0.9, "--host", "0.0.0.0").start()
    server.stop()
    log = (tmp_path / "serve.log").read_text()
    assert "warning: listening on 0.0.0.0, beyond this machine, without --secure-cookies" in log
    assert "/openapi.json" in log
