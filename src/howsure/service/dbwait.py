"""How long a write waits for a busy database, and failing fast while it stays busy.

    gate = WriteGate(db.DB_WAIT_S, serialise=True)       # SQLite: one writer thread at a time
    with gate.hold() as wait_s:                          # DatabaseUnavailable after wait_s
        ...                                              # the transaction waits at most wait_s

A request must not sit for half a minute behind a database that another process keeps locked:
every write waits at most ``wait_s`` in all (for the thread lock, then in the database's busy
handler or lock wait), then fails with `DatabaseUnavailable` (503 + Retry-After).

While the database stays locked the next writes would each wait ``wait_s`` too, one after
another on SQLite's thread lock, so a burst of requests would still queue for
``requests x wait_s``. After a write timed out, the gate is *degraded* for ``wait_s``: writes
then wait only ``DEGRADED_WAIT_S``, except one at a time, every ``wait_s``, that probes with
the full wait. The first write that gets through ends it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, IntegrityError

from howsure.errors import DatabaseUnavailable
from howsure.service.db import is_lock_timeout

__all__ = ["WriteGate", "DEGRADED_WAIT_S"]

#: How long a write waits while the database is known to be locked.
DEGRADED_WAIT_S = 0.1


class WriteGate:
    """The waiting policy of one store's write transactions.

    Parameters
    ----------
    wait_s : float
        The longest a write waits for the database.
    serialise : bool
        Let one thread write at a time (SQLite: threads queue on a lock, with a deadline,
        instead of polling in SQLite's busy handler).
    clock : callable, optional
        Monotonic seconds (tests).
    """

    def __init__(self, wait_s: float, *, serialise: bool, clock=time.monotonic) -> None:
        self.wait_s = float(wait_s)
        self._lock = threading.Lock() if serialise else None
        self._clock = clock
        self._state = threading.Lock()
        self._degraded_until = 0.0
        self._probing = False

    @property
    def degraded(self) -> bool:
        """Whether a write timed out and none got through since."""
        with self._state:
            return self._degraded_until > 0

    def _budget(self) -> tuple[float, bool]:
        """(seconds this write may wait, whether it waits the full time while degraded)."""
        with self._state:
            if self._degraded_until == 0:
                return self.wait_s, False
            if self._clock() >= self._degraded_until and not self._probing:
                self._probing = True  # one write at a time finds out whether the lock is gone
                return self.wait_s, True
            return DEGRADED_WAIT_S, False

    @contextmanager
    def hold(self) -> Iterator[float]:
        """Enter a write: yields how many seconds its transaction may still wait for locks.

        Raises `DatabaseUnavailable` when the thread lock is not free within the budget. A
        lock timeout raised inside the block (`howsure.service.db.is_lock_timeout`) degrades
        the gate; leaving the block otherwise (also with another error: the database
        answered) ends the degraded state.
        """
        budget, probe = self._budget()
        full = budget == self.wait_s
        try:
            if self._lock is None:
                yield budget
            else:
                started = self._clock()
                if not self._lock.acquire(timeout=budget):
                    self._timed_out(full)
                    raise DatabaseUnavailable(
                        f"the database is busy: another write of this process held it for more than {budget:g} s")
                try:
                    yield max(budget - (self._clock() - started), DEGRADED_WAIT_S)
                finally:
                    self._lock.release()
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            if is_lock_timeout(exc):
                self._timed_out(full)
            elif not isinstance(exc, DBAPIError) or isinstance(exc, IntegrityError):
                self._succeeded()
            raise
        else:
            self._succeeded()
        finally:
            if probe:
                with self._state:
                    self._probing = False

    def _timed_out(self, full: bool) -> None:
        # Only a write that waited the full time says the lock is still there; the fast
        # failures of the degraded state must not keep postponing the next probe.
        if full:
            with self._state:
                self._degraded_until = self._clock() + self.wait_s

    def _succeeded(self) -> None:
        with self._state:
            self._degraded_until = 0.0
