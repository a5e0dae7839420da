"""The HTTP side of the OpenAI-compatible backend: one client that retries what is worth
retrying and turns everything else into a one-line `ModelError`.

Retried: 429 and every 5xx (waiting what ``Retry-After`` says when the server says it, else
exponential backoff with full jitter), dropped connections and timeouts. Not retried: other 4xx
(the request itself is wrong, so sending it again changes nothing). The API key travels only in
the ``Authorization`` header; no message, log line or record this module writes contains it.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import httpx

from howsure.errors import ModelError

RETRY_STATUSES = frozenset({408, 409, 429})
"""Besides every 5xx: statuses that say "later", not "wrong"."""
MAX_RETRY_AFTER_S = 120.0
"""A longer ``Retry-After`` is waited only this long before the next try (a server that asks for
an hour is better reported than waited for)."""
_BODY_SHOWN = 300  # characters of a server's error body put into a message


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to try again.

    ``max_retries`` tries after the first; the n-th wait (n from 0) is uniform in
    ``[0, min(max_backoff_s, backoff_s * 2**n)]`` ("full jitter": clients that failed together do
    not come back together), or what the server's ``Retry-After`` asks (capped at
    `MAX_RETRY_AFTER_S`)."""

    max_retries: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 20.0

    def wait_s(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        return rng.uniform(0.0, min(self.max_backoff_s, self.backoff_s * 2 ** attempt))


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: a number of seconds or an HTTP date; None
    when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    return max(0.0, (when - current).total_seconds())


class ServerClient:
    """JSON over HTTP to one OpenAI-compatible base URL (``.../v1``), thread-safe.

    Parameters
    ----------
    base_url : str
        Where the server's ``/models``, ``/chat/completions`` ... live.
    api_key : str or None
        Sent as ``Authorization: Bearer``; never shown.
    key_source : str
        Where the key came from (an environment variable's name), for messages.
    timeout_s : float
        Per request: connecting, and waiting for each read.
    retry : RetryPolicy
    sleep : callable
        ``time.sleep``; tests pass a recorder.
    """

    def __init__(self, base_url: str, api_key: str | None, *, key_source: str = "OPENAI_API_KEY",
                 timeout_s: float = 60.0, retry: RetryPolicy = RetryPolicy(), concurrency: int = 4,
                 sleep: Callable[[float], None] = time.sleep, seed: int | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ModelError(f"--base-url {base_url!r} is not an http:// or https:// URL "
                             "(e.g. http://127.0.0.1:8000/v1)")
        self.base_url = base_url.rstrip("/")
        self.key_source = key_source
        self._has_key = bool(api_key)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s), limits=limits)
        self.retry = retry
        self._sleep = sleep
        self._rng = random.Random(seed)
        #: over the client's life: tries sent again after a retryable failure.
        self.retries = 0

    def get(self, path: str, *, retry: RetryPolicy | None = None) -> Any:
        return self._request("GET", path, None, retry or self.retry)

    def post(self, path: str, body: dict) -> Any:
        return self._request("POST", path, body, self.retry)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, body: dict | None, retry: RetryPolicy) -> Any:
        url = f"{self.base_url}{path}"
        attempt = 0
        while True:
            failure, wait_hint = None, None
            try:
                response = self._http.request(method, url, json=body)
            except httpx.TransportError as exc:  # refused, dropped, timed out, bad TLS ...
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                status = response.status_code
                if status < 400:
                    return self._json(response, url)
                if status not in RETRY_STATUSES and status < 500:
                    raise self._refused(response, url)
                failure = f"HTTP {status}: {_error_detail(response)}"
                wait_hint = retry_after_s(response.headers.get("retry-after"))
            if attempt >= retry.max_retries:
                raise ModelError(
                    f"the server at {self.base_url!r} did not answer {method} {path} after "
                    f"{attempt + 1} tries (last: {failure}); is it running and is --base-url right?"
                )
            self.retries += 1
            self._sleep(retry.wait_s(attempt, wait_hint, self._rng))
            attempt += 1

    def _json(self, response: httpx.Response, url: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ModelError(f"{url} answered HTTP {response.status_code} with something that is not JSON "
                             f"({response.text[:_BODY_SHOWN]!r}); is --base-url an OpenAI-compatible API "
                             "(it usually ends in /v1)?") from None

    def _refused(self, response: httpx.Response, url: str) -> ModelError:
        status = response.status_code
        detail = _error_detail(response)
        if status in (401, 403):
            if not self._has_key:
                return ModelError(f"the server at {self.base_url!r} needs an API key (HTTP {status}: {detail}); "
                                  f"none was set: put it in ${self.key_source} (or name another variable "
                                  "with --api-key-env)")
            return ModelError(f"the server at {self.base_url!r} refused the API key from ${self.key_source} "
                              f"(HTTP {status}: {detail})")
        if status == 404:
            return ModelError(f"{url} does not exist (HTTP 404: {detail}); is --base-url right (it usually "
                              "ends in /v1) and does the server offer this endpoint?")
        return ModelError(f"the server at {self.base_url!r} rejected the request to {url} (HTTP {status}: {detail})")


def _error_detail(response: httpx.Response) -> str:
    """The server's own words, from an OpenAI-style ``{"error": {"message": ...}}`` body or the
    raw text, cut short."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:_BODY_SHOWN].strip() or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data))
        if isinstance(error, dict):
            error = error.get("message", error)
        return str(error)[:_BODY_SHOWN]
    return str(data)[:_BODY_SHOWN]


__all__ = ["MAX_RETRY_AFTER_S", "RETRY_STATUSES", "RetryPolicy", "ServerClient", "retry_after_s"]
