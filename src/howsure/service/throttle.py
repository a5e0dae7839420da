"""Throttling of failed sign-in and bearer-token attempts.

Guessing a token takes many tries; a `FailureThrottle` lets each key (the service uses the
client address: a token names no user, so a failed attempt has no user name to count under) fail ``max_failures`` times in a sliding window of
``window_s`` seconds. After that every attempt under that key is refused with `Throttled`
(HTTP 429 with ``Retry-After``) until the oldest failure in the window has aged out, whether
the token it brings is right or not: otherwise the one right guess among many would still be
let through.

    throttle = FailureThrottle(max_failures=20, window_s=60)
    throttle.check(["addr:10.0.0.7"])          # raises Throttled while blocked
    if user is None:
        throttle.failed(["addr:10.0.0.7"])
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

from howsure.errors import DataError, HowsureError


class RetryLater(HowsureError):
    """The service will not do this now; the client may retry after ``retry_after_s`` (429)."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least 1, as the Retry-After header wants them."""
        return str(max(1, math.ceil(self.retry_after_s)))


class Throttled(RetryLater):
    """Too many failed authentication attempts from one address (or for one user name)."""


class FailureThrottle:
    """Counts failures per key in a sliding window and refuses keys over the limit.

    Parameters
    ----------
    max_failures : int
        Failures a key may have within ``window_s``; the next attempt is refused.
    window_s : float
        Length of the sliding window in seconds.
    max_keys : int
        Most keys remembered (the least recently failed are forgotten first), so a flood of
        addresses cannot grow memory without bound.
    clock : callable
        Seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, max_failures: int = 20, window_s: float = 60.0, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            raise DataError(f"max_failures must be an integer >= 1, got {max_failures!r}")
        if not window_s > 0:
            raise DataError(f"window_s must be > 0, got {window_s!r}")
        self.max_failures = max_failures
        self.window_s = float(window_s)
        self.max_keys = max_keys
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def check(self, keys: Iterable[str]) -> None:
        """`Throttled` when any of ``keys`` has used up its failures in the window."""
        now = self.clock()
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if times is not None and len(times) >= self.max_failures:
                    wait = times[-self.max_failures] + self.window_s - now
                    raise Throttled(f"too many failed authentication attempts from this address ({len(times)} in the last "
                                    f"{self.window_s:g} s); try again in {max(1, math.ceil(wait))} s",
                                    retry_after_s=wait)

    def failed(self, keys: Iterable[str]) -> None:
        """Record one failed attempt under each of ``keys``."""
        now = self.clock()
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if times is None:
                    times = self._failures[key] = deque(maxlen=self.max_failures)
                times.append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)


def address_key(host: str | None) -> str:
    """The throttle key of a client address (requests without one share a key)."""
    return f"addr:{host or 'unknown'}"
