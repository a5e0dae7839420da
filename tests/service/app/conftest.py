"""Fixtures of the web app tests: the tiny random model as backend, a service with users and
tokens on a fresh database (SQLite and PostgreSQL, through ``db_url``), and servers on real
sockets (uvicorn in a thread, or ``howsure serve`` in a subprocess).

Users made by `make_service`: ``ann`` (admin), ``rita`` and ``rex`` (reviewers), ``cody`` and
``carl`` (clients); ``env.headers("cody")`` is the Authorization header of that user's token.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

USERS = {"ann": "admin", "rita": "reviewer", "rex": "reviewer", "cody": "client", "carl": "client"}
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir):
    """The tiny random chat model behind the Backend protocol (loads in about a second)."""
    from howsure.backends import load_backend

    return load_backend(str(tiny_model_dir))


def add_users(store) -> dict[str, str]:
    """The five test users with one token each: name -> token."""
    tokens = {}
    for name, role in USERS.items():
        store.add_user(name, role, actor="test")
        tokens[name] = store.create_token(name, actor="test")
    return tokens


@pytest.fixture
def user_tokens(store) -> dict[str, str]:
    """The five test users added to `store`: name -> token."""
    return add_users(store)


@dataclass
class ServiceEnv:
    """A service under test: its store, app, test client and the users' tokens."""

    store: Any
    app: Any
    client: Any
    tokens: dict[str, str]
    policy: Any
    extra: dict = field(default_factory=dict)

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def classify(self, texts: list[str], user: str = "cody", **fields: Any) -> list[dict]:
        response = self.client.post("/v1/classify", json={"items": [{"text": t, **fields} for t in texts]},
                                    headers=self.headers(user))
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def post_login(self, token: str) -> Any:
        """Send the sign-in form as a browser does: fetch it (its CSRF value and cookie), then
        post it with ``token``."""
        form = self.client.get("/login", follow_redirects=False)
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        return self.client.post("/login", data={"token": token, "csrf": csrf}, follow_redirects=False)

    def sign_in(self, user: str = "rita") -> str:
        """Sign the test client in on the pages; returns the CSRF token of the session."""
        response = self.post_login(self.tokens[user])
        assert response.status_code == 303, response.text
        from howsure.service import auth

        session = self.app.state.service.sessions.load(self.client.cookies.get(auth.SESSION_COOKIE))
        return session.csrf


@pytest.fixture
def make_service(store, tiny_backend, policy_dict_factory):
    """``make_service(threshold=0.9, audit_rate=0.0, **create_app_kwargs) -> ServiceEnv``.

    ``threshold=0.0`` automates every item, ``None`` sends every item to review.
    """
    from fastapi.testclient import TestClient

    from howsure.service.app import create_app

    clients = []
    tokens = add_users(store)

    def make(threshold: float | None = 0.9, audit_rate: float = 0.0, policy: bool = True, **kwargs: Any) -> ServiceEnv:
        record = store.add_policy(policy_dict_factory(threshold=threshold), actor="test") if policy else None
        app = create_app(store, tiny_backend, audit_rate=audit_rate, seed=kwargs.pop("seed", 0),
                         session_secret="test-secret-of-enough-length", **kwargs)
        client = TestClient(app)
        client.__enter__()  # runs the lifespan: the batcher starts
        clients.append(client)
        return ServiceEnv(store, app, client, tokens, record)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


# ---------------------------------------------------------------------------- real servers
def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ThreadServer:
    """uvicorn serving an app on a free port from a background thread (no model reload)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@pytest.fixture
def thread_server():
    """``thread_server(app) -> ThreadServer`` (a context manager already entered)."""
    servers = []

    def start(app: Any) -> ThreadServer:
        server = ThreadServer(app).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


class ServeProcess:
    """``howsure serve`` in a subprocess, on a free port."""

    def __init__(self, db_url: str, policy_path: Path, model_dir: Path, log_path: Path, *extra: str) -> None:
        sock = free_socket()
        self.port = sock.getsockname()[1]
        sock.close()  # a tiny race with other processes for the port; fine on a test machine
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "howsure", "serve", "--db", db_url, "--policy", str(policy_path),
                        "--model", str(model_dir), "--port", str(self.port), "--threads", "1",
                        "--log-level", "warning", *extra]
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90, *, secret_env: bool = True) -> "ServeProcess":
        """Start and wait for /healthz; ``secret_env=False`` leaves HOWSURE_SESSION_SECRET unset
        (the server then keeps its key in a file)."""
        env = {**os.environ, "HOWSURE_SESSION_SECRET": "test-secret-of-enough-length", "PYTHONUNBUFFERED": "1"}
        if not secret_env:
            del env["HOWSURE_SESSION_SECRET"]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"howsure serve exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"howsure serve did not answer in {timeout} s:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """kill -9: no shutdown handler runs."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def serve_process(tmp_path, tiny_model_dir, policy_dict_factory):
    """``serve_process(db_url, threshold=0.9, *extra_args) -> ServeProcess`` (not started)."""
    processes = []

    def make(db_url: str, threshold: float | None = 0.9, *extra: str) -> ServeProcess:
        policy_path = tmp_path / "policy.json"
        policy_path.write_text(json.dumps(policy_dict_factory(threshold=threshold)))
        process = ServeProcess(db_url, policy_path, tiny_model_dir, tmp_path / "serve.log", *extra)
        processes.append(process)
        return process

    yield make
    for process in processes:
        process.stop()


@pytest.fixture
def live_service(store, tiny_backend, policy_dict_factory, thread_server):
    """``live_service(threshold=None, audit_rate=0.0, **create_app_kwargs) -> (ServiceEnv, url)``:
    the app under uvicorn on a real socket; ``env.client`` is an httpx client of that URL."""
    from howsure.service.app import create_app

    tokens = add_users(store)
    clients = []

    def make(threshold: float | None = None, audit_rate: float = 0.0, **kwargs: Any):
        record = store.add_policy(policy_dict_factory(threshold=threshold), actor="test")
        app = create_app(store, tiny_backend, audit_rate=audit_rate, seed=0,
                         session_secret="test-secret-of-enough-length", **kwargs)
        server = thread_server(app)
        client = httpx.Client(base_url=server.url, timeout=30)
        clients.append(client)
        return ServiceEnv(store, app, client, tokens, record), server.url

    yield make
    for client in clients:
        client.close()
