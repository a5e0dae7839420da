"""A local OpenAI-compatible server to score against: llama-cpp-python's, on a GGUF file, on a
free loopback port, for as long as a ``with`` block runs. The tests and `bench/` use it; users
who want a server of their own start one as docs/backends.md shows."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx

from howsure.backends.llamacpp_cpu import without_amx_repacking
from howsure.errors import ModelError

START_TIMEOUT_S = 180.0


def free_loopback_port() -> int:
    """A TCP port nothing listens on now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def llama_cpp_server(gguf: str | os.PathLike, *, alias: str, threads: int = 2, api_key: str | None = None,
                     n_ctx: int = 2048, port: int | None = None,
                     timeout_s: float = START_TIMEOUT_S) -> Iterator[str]:
    """Run llama-cpp-python's server on ``gguf`` (``python -m howsure.backends.openai_server``,
    which is ``python -m llama_cpp.server`` with `llamacpp_cpu.without_amx_repacking`), serving
    it as model ``alias``; yield its base URL (``http://127.0.0.1:PORT/v1``) once ``/models``
    answers, stop it afterwards.

    ``--logits_all true`` is passed because llama-cpp-python returns log-probabilities only
    then. ``api_key``: the server then refuses requests without it (it is passed on the
    server's command line, so use a throwaway one). `ModelError` with the server's last output
    when it exits or does not answer within ``timeout_s``."""
    gguf = Path(gguf)
    if not gguf.is_file():
        raise ModelError(f"GGUF file {str(gguf)!r} does not exist")
    port = port or free_loopback_port()
    # This module's own main runs llama_cpp.server's, without AMX repacking where that crashes.
    command = [sys.executable, "-m", "howsure.backends.openai_server", "--model", str(gguf), "--model_alias", alias,
               "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(threads), "--n_ctx", str(n_ctx),
               "--logits_all", "true", "--verbose", "false"] + (["--api_key", api_key] if api_key else [])
    url = f"http://127.0.0.1:{port}/v1"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/models", headers=headers, timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    with background_server(command, ready=answers, timeout_s=timeout_s,
                           what=f"llama-cpp-python's server on {str(gguf)!r}", log_chars=1500):
        yield url


@contextlib.contextmanager
def background_server(command: list[str], *, ready: Callable[[], bool], timeout_s: float, what: str,
                      env: dict[str, str] | None = None, stop_timeout_s: float = 20,
                      log_chars: int = 3000) -> Iterator[subprocess.Popen]:
    """Start ``command``, poll ``ready()`` every half second until it is true, yield the process,
    and stop it afterwards (SIGTERM, then SIGKILL after ``stop_timeout_s``). `ModelError` naming
    ``what``, with the tail of its output, when it exits or is not ready within ``timeout_s``."""
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while not ready():
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode("utf-8", "replace")[-log_chars:]
                    raise ModelError(f"{what} did not start (exit code {server.poll()}): {tail}")
                time.sleep(0.5)
            yield server
        finally:
            server.terminate()
            try:
                server.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def serve_llama_cpp() -> None:
    """``python -m llama_cpp.server``'s main (same arguments), loading its models without
    llama.cpp's AMX weight repacking where `howsure.backends.llamacpp_cpu` says it crashes."""
    import llama_cpp
    from llama_cpp.server.__main__ import main

    with without_amx_repacking(llama_cpp):
        main()


__all__ = ["START_TIMEOUT_S", "background_server", "free_loopback_port", "llama_cpp_server", "serve_llama_cpp"]

if __name__ == "__main__":
    serve_llama_cpp()
