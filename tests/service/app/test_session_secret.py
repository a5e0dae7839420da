"""The review pages' session key when HOWSURE_SESSION_SECRET is unset: kept in a private file,
made once, shared by processes starting together, so a restart keeps reviewers signed in."""

from __future__ import annotations

import multiprocessing
import re
import stat

import httpx
import pytest

from howsure.errors import AuthError
from howsure.service import auth

pytestmark = pytest.mark.timeout(180)


def test_the_key_file_is_made_private_once_and_then_reused(tmp_path):
    path = tmp_path / "deep" / "session-secret"
    first = auth.load_or_create_secret(path)
    assert len(first) >= auth.SECRET_MIN_BYTES and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.load_or_create_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["session-secret"]  # no drafts left behind
    other = tmp_path / "other-secret"
    assert auth.load_or_create_secret(other) != first


def _read_key(path: str, queue) -> None:
    queue.put(auth.load_or_create_secret(path))


def test_processes_starting_together_share_one_key(tmp_path):
    path = str(tmp_path / "session-secret")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_read_key, args=(path, queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    keys = {queue.get(timeout=60) for _ in workers}
    for worker in workers:
        worker.join(timeout=60)
    assert len(keys) == 1 and keys == {auth.load_or_create_secret(path)}


def test_unsafe_or_broken_key_files_are_refused_with_the_file_named(tmp_path):
    readable = tmp_path / "readable"
    readable.write_text("x" * 64)
    readable.chmod(0o644)
    with pytest.raises(AuthError, match=r"'.*readable' may be read by other users \(mode 644\); run `chmod 600"):
        auth.load_or_create_secret(readable)
    short = tmp_path / "short"
    short.write_text("abc\n")
    short.chmod(0o600)
    with pytest.raises(AuthError, match=r"'.*short' holds 3 bytes, expected at least 32; delete it"):
        auth.load_or_create_secret(short)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(AuthError, match=r"cannot use the session secret file '.*a-file/session-secret'"):
        auth.load_or_create_secret(blocked / "session-secret")


def sign_in(url: str, token: str) -> str:
    with httpx.Client(base_url=url) as client:
        form = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        response = client.post("/login", data={"token": token, "csrf": csrf})
        assert response.status_code == 303, response.text
        return response.cookies[auth.SESSION_COOKIE]


def review_status(url: str, cookie: str) -> int:
    return httpx.get(f"{url}/review", cookies={auth.SESSION_COOKIE: cookie}, follow_redirects=False).status_code


def test_a_restart_keeps_reviewers_signed_in(store, user_tokens, serve_process, tmp_path):
    key_file = tmp_path / "key" / "session-secret"
    server = serve_process(store.url, 0.9, "--session-secret-file", str(key_file)).start(secret_env=False)
    cookie = sign_in(server.url, user_tokens["rita"])
    assert review_status(server.url, cookie) == 200
    assert f"signed with the key in {key_file}" in server.log_path.read_text()
    server.stop()
    server.start(secret_env=False)
    assert review_status(server.url, cookie) == 200  # same key, same session
    # A new key (the file deleted) ends the old sessions: the key really is what signs them.
    server.stop()
    key_file.unlink()
    server.start(secret_env=False)
    assert review_status(server.url, cookie) == 303
