"""The store's records: plain frozen dataclasses the store hands out and takes in, the token
hash, and the builders that turn a database row into a record."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from howsure.decisions.policy import Policy

__all__ = [
    "NewItem", "ItemRecord", "ReviewRecord", "PolicyRecord", "UserRecord", "TokenRecord", "EventRecord",
    "LabelledItem", "TOKEN_PREFIX", "hash_token",
]

TOKEN_PREFIX = "hs_"


@dataclass(frozen=True)
class PolicyRecord:
    """One stored policy version. ``body`` is the policy JSON (`howsure.decisions.policy.Policy.to_dict`)."""

    version: int
    policy_id: str
    body: dict[str, Any]
    created_at: datetime
    created_by: str
    active: bool
    note: str

    @property
    def labels(self) -> list[str]:
        """The policy's label names, in column order."""
        return list(self.body["labels"])

    def to_policy(self) -> Policy:
        """The `howsure.policy.Policy` this record stores."""
        # Local for weight: howsure.policy loads scipy, which readers of records (the CLI's
        # user and token commands, sessions) never need.

        return Policy.from_dict(self.body)


@dataclass(frozen=True)
class UserRecord:
    """A user of the service. ``role`` is ``admin``, ``reviewer`` or ``client``."""

    id: int
    name: str
    role: str
    disabled: bool


@dataclass(frozen=True)
class TokenRecord:
    """A stored token without its secret: ``hash_prefix`` identifies it for `revoke_token`."""

    id: int
    user_name: str
    hash_prefix: str
    note: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewItem:
    """An item to store: the model's output on ``text`` and the policy's decision.

    ``decision`` is ``"auto"`` or ``"review"``. ``queue_reason`` is ``"review"`` for every
    review decision, ``"audit"`` for an auto item sampled for auditing, else None; items with
    a queue reason are queued for people. ``request_id`` is the client's idempotency key
    (unique per client, the ``actor`` of `ReviewStore.add_items`). ``audit_rate`` is the chance
    an auto item was drawn for audit, kept with auto items (None for review decisions, or
    when unknown): recalibration weights each audited item by its inverse.
    """

    text: str
    prediction: str
    confidence: float
    probabilities: dict[str, float]
    raw_probabilities: dict[str, float]
    decision: str
    queue_reason: str | None
    policy_version: int
    policy_id: str
    external_id: str | None = None
    request_id: str | None = None
    audit_rate: float | None = None


@dataclass(frozen=True)
class ItemRecord:
    """A stored item (one row of ``items``); probabilities are dicts label -> probability."""

    id: int
    request_id: str | None
    external_id: str | None
    text: str
    created_at: datetime
    created_by: str
    policy_version: int
    policy_id: str
    prediction: str
    confidence: float
    probabilities: dict[str, float]
    raw_probabilities: dict[str, float]
    decision: str
    queue_reason: str | None
    status: str
    queued_at: datetime | None
    claimed_by: str | None
    claim_expires_at: datetime | None
    audit_rate: float | None = None


@dataclass(frozen=True)
class ReviewRecord:
    """A person's label for an item. ``source`` is the item's queue reason (review or audit);
    ``policy_version`` the version that decided the item."""

    id: int
    item_id: int
    reviewer: str
    label: str
    created_at: datetime
    policy_version: int
    agreed_with_model: bool
    source: str


@dataclass(frozen=True)
class EventRecord:
    """One entry of the audit log."""

    id: int
    at: datetime
    actor: str
    action: str
    item_id: int | None
    policy_version: int | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelledItem:
    """A reviewed item with its human label: what recalibration and export read.

    ``source`` is ``"review"`` (routed to people because the model was unsure) or ``"audit"``
    (a random sample of the automated items); it equals ``queue_reason``. ``audit_rate`` is
    the chance an audit item was drawn (None when it was not recorded).
    """

    item_id: int
    text: str
    label: str
    prediction: str
    raw_probabilities: dict[str, float]
    confidence: float
    decision: str
    queue_reason: str
    policy_version: int
    reviewer: str
    reviewed_at: datetime
    source: str
    policy_id: str
    external_id: str | None
    audit_rate: float | None = None


def hash_token(token: str) -> str:
    """sha256 hex of a token: what the ``tokens`` table stores.

    A plain hash is enough: the tokens are 256-bit random strings, so there is nothing to
    brute-force, and a slow hash would cost every API request.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def item_record(row: Any) -> ItemRecord:
    return ItemRecord(
        id=row.id, request_id=row.request_id, external_id=row.external_id, text=row.text,
        created_at=row.created_at, created_by=row.created_by, policy_version=row.policy_version,
        policy_id=row.policy_id, prediction=row.prediction, confidence=float(row.confidence),
        probabilities=json.loads(row.probabilities), raw_probabilities=json.loads(row.raw_probabilities),
        decision=row.decision, queue_reason=row.queue_reason, status=row.status, queued_at=row.queued_at,
        claimed_by=row.claimed_by, claim_expires_at=row.claim_expires_at, audit_rate=row.audit_rate,
    )


def review_record(row: Any) -> ReviewRecord:
    return ReviewRecord(id=row.id, item_id=row.item_id, reviewer=row.reviewer, label=row.label,
                        created_at=row.created_at, policy_version=row.policy_version,
                        agreed_with_model=bool(row.agreed_with_model), source=row.source)


def policy_record(row: Any) -> PolicyRecord:
    return PolicyRecord(version=row.version, policy_id=row.policy_id, body=json.loads(row.body),
                        created_at=row.created_at, created_by=row.created_by, active=bool(row.active),
                        note=row.note)


def user_record(row: Any) -> UserRecord:
    return UserRecord(id=row.id, name=row.name, role=row.role, disabled=bool(row.disabled))


def token_record(row: Any) -> TokenRecord:
    return TokenRecord(id=row.id, user_name=row.user_name, hash_prefix=row.token_hash[:12], note=row.note,
                       created_at=row.created_at, last_used_at=row.last_used_at, revoked_at=row.revoked_at)
