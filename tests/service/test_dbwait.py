"""The write gate's waiting rules, on a fake clock (no database)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from howsure.service.dbwait import DEGRADED_WAIT_S, WriteGate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def locked() -> OperationalError:
    return OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))


def test_no_write_waits_past_the_oldest_writes_deadline():
    clock = Clock()
    gate = WriteGate(3.0, serialise=False, clock=clock)
    with gate.hold() as first_left:
        assert first_left() == 3.0
        clock.now += 2.5
        with gate.hold() as second:  # started 2.5 s after a write that is still waiting
            assert second() == pytest.approx(0.5)
            clock.now += 0.3  # e.g. waiting for a pooled connection
            assert second() == pytest.approx(0.2)
            clock.now += 1
            assert second() == DEGRADED_WAIT_S
    with gate.hold() as later:
        assert later() == 3.0


def test_a_timeout_degrades_the_gate_until_a_write_gets_through():
    clock = Clock()
    gate = WriteGate(3.0, serialise=False, clock=clock)
    with pytest.raises(OperationalError):
        with gate.hold():
            raise locked()
    assert gate.degraded
    for _ in range(3):  # fast failures do not postpone the probe
        with pytest.raises(OperationalError):
            with gate.hold() as budget:
                assert budget() == DEGRADED_WAIT_S
                raise locked()
    with gate.hold() as budget:  # a fast write that gets through (another table) proves nothing
        assert budget() == DEGRADED_WAIT_S
    assert gate.degraded
    clock.now += 3.0
    with gate.hold() as probe:
        assert probe() == 3.0
        with gate.hold() as meanwhile:  # one probe at a time
            assert meanwhile() == DEGRADED_WAIT_S
    assert not gate.degraded  # the probe got through
    with gate.hold() as healthy:
        assert healthy() == 3.0


def test_other_errors_mean_the_database_answered():
    clock = Clock()
    gate = WriteGate(3.0, serialise=False, clock=clock)
    with pytest.raises(OperationalError):
        with gate.hold():
            raise locked()
    clock.now += 3.0
    with pytest.raises(ValueError):  # the probe
        with gate.hold():
            raise ValueError("a bad item, found inside the transaction")
    assert not gate.degraded
