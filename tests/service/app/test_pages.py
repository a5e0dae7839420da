"""The review and stats pages through the test client: sign-in, sessions, CSRF, escaping, the
review form, and the stats page with and without the drift module."""

from __future__ import annotations

import re
import sys

import pytest

from howsure.service import auth

pytestmark = pytest.mark.timeout(120)


def test_pages_need_a_signed_in_reviewer(make_service):
    env = make_service()
    for path in ("/review", "/stats", "/"):
        response = env.client.get(path, follow_redirects=False)
        assert response.status_code == 303
    assert env.client.get("/review", follow_redirects=False).headers["location"] == "/login"
    unknown = env.post_login("hs_wrong")
    assert unknown.status_code == 401 and "unknown or revoked" in unknown.text
    client = env.post_login(env.tokens["cody"])
    assert client.status_code == 403 and "role client" in client.text
    assert auth.SESSION_COOKIE not in env.client.cookies


def test_sign_in_sets_a_strict_httponly_session_and_sign_out_ends_it(make_service):
    env = make_service()
    response = env.post_login(env.tokens["rita"])
    assert response.status_code == 303 and response.headers["location"] == "/review"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert env.tokens["rita"] not in cookie  # the token never leaves the login request
    page = env.client.get("/review")
    assert page.status_code == 200 and "rita" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert env.client.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert env.client.get("/review", follow_redirects=False).status_code == 303


def test_a_signed_out_cookie_is_void_everywhere(make_service, store, tiny_backend):
    """Sign-out ends the server-side session: a copy of the cookie kept before fails on this
    process, on another process serving the same database with the same key, and after a
    restart (a new store on the same file)."""
    from fastapi.testclient import TestClient

    from howsure.service.app import create_app
    from howsure.service.store import ReviewStore

    env = make_service()
    csrf = env.sign_in("rita")
    kept = env.client.cookies.get(auth.SESSION_COOKIE)
    second_store = ReviewStore(store.url)
    try:
        second = create_app(second_store, tiny_backend, session_secret="test-secret-of-enough-length")
        with TestClient(second) as other:
            other.cookies.set(auth.SESSION_COOKIE, kept)
            assert other.get("/review").status_code == 200  # the session holds across processes
            assert env.client.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
            for client in (env.client, other):
                client.cookies.clear()
                client.cookies.set(auth.SESSION_COOKIE, kept)
                assert client.get("/review", follow_redirects=False).status_code == 303
                assert client.post("/review", data={"csrf": csrf, "item_id": "1", "action": "skip"},
                                   follow_redirects=False).headers["location"] == "/login"
    finally:
        second_store.close()
    with ReviewStore(store.url) as restarted:
        assert restarted.events(action="session_ended")[0].actor == "rita"
    # Signing in again opens a new session; the old cookie stays void.
    env.client.cookies.clear()
    env.sign_in("rita")
    assert env.client.get("/review").status_code == 200
    env.client.cookies.clear()
    env.client.cookies.set(auth.SESSION_COOKIE, kept)
    assert env.client.get("/review", follow_redirects=False).status_code == 303


def test_sign_in_from_another_page_is_refused(make_service):
    """Login CSRF: a form posted from elsewhere has no matching CSRF value and cookie, so it
    cannot sign a reviewer's browser in as somebody else."""
    env = make_service()
    token = env.tokens["rita"]
    form = env.client.get("/login")
    assert auth.LOGIN_COOKIE in env.client.cookies and "Path=/login" in form.headers["set-cookie"]
    nonce = env.client.cookies.get(auth.LOGIN_COOKIE)
    for data in ({"token": token}, {"token": token, "csrf": "forged"}, {"token": token, "csrf": nonce + "x"}):
        refused = env.client.post("/login", data=data, follow_redirects=False)
        assert refused.status_code == 403 and "another page" in refused.text
        assert auth.SESSION_COOKIE not in env.client.cookies
    env.client.cookies.clear()  # the right value without its cookie (another browser's form)
    refused = env.client.post("/login", data={"token": token, "csrf": nonce}, follow_redirects=False)
    assert refused.status_code == 403 and auth.SESSION_COOKIE not in env.client.cookies
    signed_in = env.post_login(token)
    assert signed_in.status_code == 303 and auth.SESSION_COOKIE in env.client.cookies
    assert auth.LOGIN_COOKIE not in env.client.cookies  # used up


def test_forged_or_expired_cookies_are_ignored(make_service):
    env = make_service()
    env.sign_in("rita")
    good = env.client.cookies.get(auth.SESSION_COOKIE)
    payload, signature = good.split(".")
    forged_payload = auth._b64encode(b'{"u":"ann","c":"x","e":9999999999}')
    # Change the signature's last two characters to something they were not (a fixed "AA"
    # would leave about one signature in a thousand untouched, and the test would fail then).
    tampered_tail = "AA" if signature[-2:] != "AA" else "BE"
    tampered = f"{payload}.{signature[:-2]}{tampered_tail}"
    assert tampered != good
    for value in (f"{forged_payload}.{signature}", tampered, "garbage", ""):
        env.client.cookies.clear()
        env.client.cookies.set(auth.SESSION_COOKIE, value)
        assert env.client.get("/review", follow_redirects=False).status_code == 303
    # A disabled user's session ends at once, and so does one whose token was revoked.
    env.client.cookies.clear()
    env.client.cookies.set(auth.SESSION_COOKIE, good)
    assert env.client.get("/review").status_code == 200
    env.store.set_user_disabled("rita", True, actor="test")
    assert env.client.get("/review", follow_redirects=False).status_code == 303
    env.client.cookies.clear()
    env.sign_in("rex")
    assert env.client.get("/review").status_code == 200
    env.store.revoke_token(env.tokens["rex"], actor="test")
    assert env.client.get("/review", follow_redirects=False).status_code == 303


def test_item_text_is_escaped(make_service):
    env = make_service(threshold=None)
    evil = "<script>alert('x')</script><img src=x onerror=alert(1)> & \"quotes\""
    env.classify([evil], id="<b>ext</b>")
    env.sign_in("rita")
    page = env.client.get("/review").text
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>ext</b>" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; &amp; &#34;quotes&#34;" in page
    assert "&lt;b&gt;ext&lt;/b&gt;" in page
    # The only scripts are the page's own file.
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/review.js" defer>']


def test_review_form_needs_the_session_csrf_token(make_service):
    env = make_service(threshold=None)
    [item] = env.classify(["judge me"])
    csrf = env.sign_in("rita")
    page = env.client.get("/review").text
    assert f'name="item_id" value="{item["item_id"]}"' in page
    form = {"item_id": str(item["item_id"]), "label": "positive", "action": "review"}
    for bad in ({}, {"csrf": "wrong"}, {"csrf": csrf + "x"}):
        response = env.client.post("/review", data={**form, **bad}, follow_redirects=False)
        assert response.status_code == 403 and "CSRF" in response.text
    assert env.store.get_review(item["item_id"]) is None
    ok = env.client.post("/review", data={**form, "csrf": csrf}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == f"/review?done=saved&item={item['item_id']}"
    review = env.store.get_review(item["item_id"])
    assert (review.reviewer, review.label) == ("rita", "positive")
    after = env.client.get(ok.headers["location"]).text
    assert f"Saved item {item['item_id']}." in after and "The queue is empty" in after
    assert re.search(r'id="my-count">1<', after)


def test_review_form_says_when_the_database_failed(make_service):
    """A review the database could not store is reported as not saved (503), not as the
    reviewer's mistake, and can be sent again once the database is back."""
    env = make_service(threshold=None)
    [item] = env.classify(["judge me"])
    csrf = env.sign_in("rita")
    assert f'value="{item["item_id"]}"' in env.client.get("/review").text  # rita claims it
    form = {"csrf": csrf, "item_id": str(item["item_id"]), "label": "positive", "action": "review"}
    with env.store.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE reviews RENAME TO reviews_gone")
    try:
        failed = env.client.post("/review", data=form, follow_redirects=False)
        assert failed.status_code == 503 and "not saved" in failed.text and "reviews" not in failed.text
    finally:
        with env.store.engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE reviews_gone RENAME TO reviews")
    assert env.store.get_review(item["item_id"]) is None
    again = env.client.post("/review", data=form, follow_redirects=False)
    assert again.status_code == 303 and env.store.get_review(item["item_id"]).label == "positive"


def test_review_form_skip_and_conflicts(make_service):
    env = make_service(threshold=None)
    a, b = env.classify(["skip this", "keep that"])
    csrf = env.sign_in("rita")
    assert f'value="{a["item_id"]}"' in env.client.get("/review").text
    skipped = env.client.post("/review", data={"csrf": csrf, "item_id": a["item_id"], "action": "skip"},
                              follow_redirects=False)
    assert skipped.headers["location"] == f"/review?done=skipped&item={a['item_id']}"
    page = env.client.get(skipped.headers["location"]).text
    assert f'value="{b["item_id"]}"' in page and "went back to the end of the queue" in page
    no_label = env.client.post("/review", data={"csrf": csrf, "item_id": b["item_id"], "action": "review"},
                               follow_redirects=False)
    assert "reason=label" in no_label.headers["location"] and env.store.get_review(b["item_id"]) is None
    # An item somebody else holds is not saved; the page says why.
    env.client.get("/v1/queue/next", headers=env.headers("rex"))  # rex takes item a
    taken = env.client.post("/review", data={"csrf": csrf, "item_id": a["item_id"], "label": "negative"},
                            follow_redirects=False)
    assert "done=conflict" in taken.headers["location"]
    assert "another reviewer took it over" in env.client.get(taken.headers["location"]).text
    assert env.store.get_review(a["item_id"]) is None


def test_review_form_refuses_an_unknown_action(make_service):
    env = make_service(threshold=None)
    [item] = env.classify(["judge me"])
    csrf = env.sign_in("rita")
    env.client.get("/review")  # rita claims it
    response = env.client.post("/review", data={"csrf": csrf, "item_id": item["item_id"], "label": "positive",
                                                "action": "approve-all"}, follow_redirects=False)
    assert response.status_code == 400
    assert "approve-all" in response.text and "review" in response.text and "skip" in response.text
    assert env.store.get_review(item["item_id"]) is None
    assert env.store.get_item(item["item_id"]).status == "claimed"


def test_review_page_shows_suggestion_counts_and_hides_it_for_audits(make_service):
    env = make_service(threshold=None)
    [item] = env.classify(["needs a person"])
    env.sign_in("rita")
    page = env.client.get("/review").text
    assert f"Model suggests <strong>{item['label']}</strong>" in page
    assert f"{item['confidence'] * 100:.1f}%" in page
    assert re.search(r'id="queue-length">0<', page) and re.search(r'id="my-count">0<', page)
    assert page.count('type="radio" name="label"') == 2 and "<kbd>1</kbd>" in page and "<kbd>2</kbd>" in page

    audit_env = make_service(threshold=0.0, audit_rate=1.0)
    [audited] = audit_env.classify(["checked at random"])
    audit_env.sign_in("rex")
    page = audit_env.client.get("/review").text
    assert "audit sample" in page and "Model suggests" not in page and "hidden" in page


def test_stats_page(make_service, monkeypatch):
    env = make_service(threshold=0.0, audit_rate=1.0)
    env.classify(["a", "b", "c"])
    env.sign_in("rita")
    page = env.client.get("/stats")
    assert page.status_code == 200
    for text in ("Automation rate", "100.0%", "3 of 3 items", "Audited accuracy", "Guarantee: at least 80.0%",
                 "Queue", "Drift", "Policy history", env.policy.policy_id):
        assert text in page.text
    # The page still renders while the drift module is missing.
    monkeypatch.setitem(sys.modules, "howsure.service.drift", None)
    page = env.client.get("/stats")
    assert page.status_code == 200 and "the drift check is not installed" in page.text
