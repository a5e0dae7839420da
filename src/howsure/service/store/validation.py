"""Checks of the values the store's methods take: each raises `StoreError` naming the value
and what was expected."""

from __future__ import annotations

import math
from typing import Any

from howsure.core.validation import check_probability_map
from howsure.errors import StoreError
from howsure.service import db
from howsure.service.store.records import NewItem

__all__ = ["MAX_NAME_CHARS", "MAX_ID_CHARS", "check_name", "check_text", "check_int", "check_probabilities",
           "check_new_item"]

MAX_NAME_CHARS = 100
MAX_ID_CHARS = 200


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise StoreError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_CHARS:
        raise StoreError(f"{what} {value[:20]!r}... is {len(value)} characters; at most {MAX_NAME_CHARS}")
    return value


def check_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise StoreError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    return value


def check_int(value: Any, what: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StoreError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def check_probabilities(value: Any, what: str) -> None:
    """A stored item's label -> probability map: core's check, raising StoreError (HTTP 400)."""
    check_probability_map(value, what, StoreError)


def check_new_item(item: Any, position: int) -> None:
    where = f"item {position}"
    if not isinstance(item, NewItem):
        raise StoreError(f"{where} must be a NewItem, got {type(item).__name__}")
    if not isinstance(item.text, str):
        raise StoreError(f"{where}: text must be a string, got {type(item.text).__name__}")
    if item.decision not in db.DECISIONS:
        raise StoreError(f"{where}: decision {item.decision!r} is not one of {list(db.DECISIONS)}")
    expected = ("review",) if item.decision == "review" else (None, "audit")
    if item.queue_reason not in expected:
        raise StoreError(f"{where}: a {item.decision!r} decision needs queue_reason in {list(expected)}, "
                         f"got {item.queue_reason!r}")
    if isinstance(item.confidence, bool) or not isinstance(item.confidence, (int, float)) \
            or not math.isfinite(item.confidence) or not 0 <= item.confidence <= 1:
        raise StoreError(f"{where}: confidence must be a number in [0, 1], got {item.confidence!r}")
    check_probabilities(item.probabilities, f"{where} probabilities")
    check_probabilities(item.raw_probabilities, f"{where} raw_probabilities")
    check_int(item.policy_version, f"{where} policy_version")
    rate = item.audit_rate
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                             or not math.isfinite(rate) or not 0 <= rate <= 1):
        raise StoreError(f"{where}: audit_rate must be null or a number in [0, 1], got {rate!r}")
    if item.queue_reason == "audit" and rate is not None and rate == 0:
        raise StoreError(f"{where}: an item queued for audit cannot have been drawn at audit_rate 0")
    for name in ("request_id", "external_id"):
        value = getattr(item, name)
        if value is not None and (not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS):
            raise StoreError(f"{where}: {name} must be null or a string of 1 to {MAX_ID_CHARS} characters, "
                             f"got {value!r}")
