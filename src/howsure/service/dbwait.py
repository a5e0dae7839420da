"""How long a write waits for a busy database, and failing fast while it stays busy.

    gate = WriteGate(db.DB_WAIT_S, serialise=True)       # SQLite: one writer thread at a time
    with gate.hold() as remaining:                       # DatabaseUnavailable after wait_s
        connection = engine.connect()                    # may wait for a pooled connection
        ... remaining() ...                              # what the transaction may still wait

A request must not sit for half a minute behind a database that another process keeps locked:
every write waits at most ``wait_s`` in all (for the thread lock, then in the database's busy
handler or lock wait), then fails with `DatabaseUnavailable` (503 + Retry-After).

Behind a database that stays locked, the next writes would each wait ``wait_s`` too, one after
another on SQLite's thread lock (or for a pooled connection), so a burst of requests would
queue for several times ``wait_s``. Two rules bound that:

* no write waits past the deadline of the oldest write in flight: when that one gives up, the
  ones queued behind it give up with it;
* after a write timed out the gate is *degraded*: writes then wait only ``DEGRADED_WAIT_S``,
  except one at a time, once every ``wait_s``, that probes with the full wait. The first probe
  that gets through ends it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
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
        self._inflight: dict[int, float] = {}  # id of a write -> when it started waiting
        self._next_id = 0

    @property
    def degraded(self) -> bool:
        """Whether a write timed out and none got through since."""
        with self._state:
            return self._degraded_until > 0

    def read_wait(self) -> float:
        """How long a read may wait for locks: `DEGRADED_WAIT_S` while degraded, else
        ``wait_s``. (On PostgreSQL a read waits for a table someone LOCKed; SQLite's WAL
        readers never wait for the writer.)"""
        return DEGRADED_WAIT_S if self.degraded else self.wait_s

    def _enter(self) -> tuple[int, float, bool, bool]:
        """Register a write: (its id, seconds it may wait, whether it is the degraded gate's
        probe, whether it runs on the degraded gate's short wait)."""
        with self._state:
            now = self._clock()
            probe = fast = False
            if self._degraded_until == 0:
                oldest = min(self._inflight.values(), default=now)
                budget = max(DEGRADED_WAIT_S, min(self.wait_s, oldest + self.wait_s - now))
            elif now >= self._degraded_until and not self._probing:
                self._probing = probe = True  # one write at a time finds out whether the lock is gone
                budget = self.wait_s
            else:
                budget, fast = DEGRADED_WAIT_S, True
            self._next_id += 1
            self._inflight[self._next_id] = now
            return self._next_id, budget, probe, fast

    def _leave(self, write_id: int, probe: bool) -> None:
        with self._state:
            del self._inflight[write_id]
            if probe:
                self._probing = False

    @contextmanager
    def hold(self) -> Iterator[Callable[[], float]]:
        """Enter a write: yields a function that says how many seconds the write may still
        wait for locks (call it right before the transaction: waiting for a pooled
        connection counts too; never less than `DEGRADED_WAIT_S`).

        Raises `DatabaseUnavailable` when the thread lock is not free within the budget. A
        lock timeout raised inside the block (`howsure.service.db.is_lock_timeout`) degrades
        the gate; leaving the block otherwise (also with another error: the database
        answered) ends the degraded state, unless the write ran on the degraded gate's short
        wait: on PostgreSQL a write to a table nobody locked gets through then, which says
        nothing about the locked one (only the probe's answer does).
        """
        write_id, budget, probe, fast = self._enter()
        deadline = self._clock() + budget

        def remaining() -> float:
            return max(deadline - self._clock(), DEGRADED_WAIT_S)

        try:
            if self._lock is None:
                yield remaining
            else:
                if not self._lock.acquire(timeout=budget):
                    self._timed_out(fast)
                    raise DatabaseUnavailable(
                        f"the database is busy: another write of this process held it for more than {budget:g} s")
                try:
                    yield remaining
                finally:
                    self._lock.release()
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            if is_lock_timeout(exc):
                self._timed_out(fast)
            elif not fast and (not isinstance(exc, DBAPIError) or isinstance(exc, IntegrityError)):
                self._succeeded()
            raise
        else:
            if not fast:
                self._succeeded()
        finally:
            self._leave(write_id, probe)

    def _timed_out(self, fast: bool) -> None:
        # The short-wait failures of the degraded state must not keep postponing the probe.
        if not fast:
            with self._state:
                self._degraded_until = self._clock() + self.wait_s

    def _succeeded(self) -> None:
        with self._state:
            self._degraded_until = 0.0
