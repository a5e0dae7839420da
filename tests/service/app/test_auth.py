"""Session cookies, CSRF comparison, bearer parsing and role checks, without a server."""

from __future__ import annotations

import pytest

from howsure.errors import AuthError
from howsure.service import auth
from howsure.service.store import UserRecord


def user(role: str) -> UserRecord:
    return UserRecord(id=1, name="u", role=role, disabled=False)


def test_session_round_trip_and_tampering():
    signer = auth.SessionSigner("a-secret-of-sixteen+")
    session, cookie = signer.new_session("rita", now=1000.0)
    assert signer.load(cookie, now=1001.0) == session
    assert session.expires == 1000.0 + auth.SESSION_MAX_AGE_S
    payload, signature = cookie.split(".")
    assert signer.load(cookie, now=session.expires + 1) is None  # expired
    assert signer.load(f"{payload}x.{signature}", now=1001.0) is None  # edited payload
    assert signer.load(f"{payload}.{signature[::-1]}", now=1001.0) is None  # wrong signature
    assert auth.SessionSigner("another-secret-of-16").load(cookie, now=1001.0) is None  # other key
    for garbage in (None, "", "no-dot", "a.b.c", "é.é", "x" * 5000):
        assert signer.load(garbage) is None


def test_each_session_gets_its_own_csrf_token():
    signer = auth.SessionSigner("a-secret-of-sixteen+")
    first, _ = signer.new_session("rita")
    second, _ = signer.new_session("rita")
    assert first.csrf != second.csrf and len(first.csrf) >= 40
    assert auth.csrf_matches(first, first.csrf)
    assert not auth.csrf_matches(first, second.csrf)
    assert not auth.csrf_matches(first, None) and not auth.csrf_matches(None, first.csrf)
    assert not auth.csrf_matches(first, "é")


def test_secret_comes_from_the_environment_or_is_random(monkeypatch):
    monkeypatch.setenv(auth.SECRET_ENV, "shared-by-every-worker")
    _, cookie = auth.SessionSigner().new_session("rita")
    assert auth.SessionSigner().load(cookie) is not None  # another process with the same env
    monkeypatch.delenv(auth.SECRET_ENV)
    _, cookie = auth.SessionSigner().new_session("rita")
    assert auth.SessionSigner().load(cookie) is None
    with pytest.raises(AuthError, match="at least 16 bytes, got 5"):
        auth.SessionSigner("short")


@pytest.mark.parametrize("header, message", [
    (None, "missing 'Authorization: Bearer <token>'"),
    ("", "missing"),
    ("Basic dXNlcjpwdw==", "got scheme 'Basic'"),
    ("Bearer ", "must be 'Bearer <token>'"),
])
def test_bearer_header_errors(header, message):
    with pytest.raises(auth.Unauthorized, match=message):
        auth.bearer_token(header)


def test_bearer_header_parses():
    assert auth.bearer_token("Bearer hs_abc") == "hs_abc"
    assert auth.bearer_token("bearer  hs_abc ") == "hs_abc"


@pytest.mark.parametrize("role, allowed, ok", [
    ("admin", auth.ADMIN, True), ("admin", auth.CLASSIFY, True), ("client", auth.CLASSIFY, True),
    ("reviewer", auth.CLASSIFY, False), ("client", auth.REVIEW, False), ("reviewer", auth.ADMIN, False),
])
def test_roles(role, allowed, ok):
    if ok:
        auth.check_role(user(role), allowed, "do it")
    else:
        with pytest.raises(auth.Forbidden, match=f"role {role!r}; to do it the role must be admin"):
            auth.check_role(user(role), allowed, "do it")
