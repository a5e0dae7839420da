"""The JSON API's request and response models (pydantic), and the builders that turn the
store's records into them."""

# No `from __future__ import annotations`: FastAPI must resolve the request models built inside
# request_models (their limits are settings), which string annotations would hide from it.
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from howsure.errors import HowsureError
from howsure.service.store.records import ItemRecord, PolicyRecord, ReviewRecord

__all__ = [
    "MAX_ID", "MAX_KEY_CHARS", "ErrorBody", "ErrorResponse", "clean_string", "request_models",
    "ClassifiedItem", "ClassifyResponse", "ReviewOut", "ItemOut", "QueueNextResponse", "ReviewIn", "PolicyOut",
    "Interval", "AuditAccuracy", "StatsResponse", "HealthResponse", "item_out", "policy_out",
]

MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL
MAX_KEY_CHARS = 200  # external ids, request ids, labels (the store's column widths)


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable: unauthorized, forbidden, not_found, conflict, too_large, "
                                  "invalid_input, unavailable, ...")
    message: str = Field(description="What was wrong and what was expected instead.")


class ErrorResponse(BaseModel):
    error: ErrorBody


def clean_string(value: str | None, what: str) -> str | None:
    # PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded as UTF-8: both
    # would fail deep in the database driver, so they are refused here with a clear message.
    if value is None:
        return value
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character (\\u0000), which cannot be stored")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (it contains a lone surrogate)") from None
    return value


def request_models(max_text_chars: int, max_items: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """The classify request models with this app's limits in their schema."""

    class ClassifyItem(BaseModel):
        """One text to classify."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
            "text": "A gorgeous, witty, seductive movie.", "id": "review-1017", "request_id": "9f1c2e"}})
        text: str = Field(min_length=1, max_length=max_text_chars, description="The text to classify.")
        id: str | None = Field(None, min_length=1, max_length=MAX_KEY_CHARS,
                               description="Your id for the item, stored and returned as external_id.")
        request_id: str | None = Field(
            None, min_length=1, max_length=MAX_KEY_CHARS,
            description="Idempotency key: sending the same request_id again (a retry after a timeout or a "
                        "crash) returns the stored item instead of storing a second one.")

        @field_validator("text")
        @classmethod
        def _text(cls, value: str) -> str:
            if not value.strip():
                raise ValueError("text is blank; send the text to classify")
            return clean_string(value, "text")

        @field_validator("id", "request_id")
        @classmethod
        def _keys(cls, value: str | None, info: ValidationInfo) -> str | None:
            return clean_string(value, info.field_name)

    class ClassifyBatch(BaseModel):
        """Several texts at once (scored together with other requests' texts)."""

        model_config = ConfigDict(extra="forbid")
        items: list[ClassifyItem] = Field(min_length=1, max_length=max_items)

    return ClassifyItem, ClassifyBatch


class ClassifiedItem(BaseModel):
    item_id: int = Field(description="The stored item's id (GET /v1/items/{item_id}).")
    external_id: str | None = Field(description="The id you sent with the item.")
    request_id: str | None
    label: str = Field(description="The predicted label.")
    confidence: float = Field(description="Calibrated probability of the predicted label.")
    probabilities: dict[str, float] = Field(description="Calibrated probability of every label.")
    decision: Literal["auto", "review"] = Field(
        description="auto: act on the label; review: a person will label the item.")
    policy_version: int
    policy_id: str


class ClassifyResponse(BaseModel):
    items: list[ClassifiedItem]


class ReviewOut(BaseModel):
    id: int
    item_id: int
    reviewer: str
    label: str
    created_at: datetime
    policy_version: int
    agreed_with_model: bool
    source: Literal["review", "audit"]


class ItemOut(ClassifiedItem):
    text: str
    status: Literal["done", "queued", "claimed", "reviewed"]
    queue_reason: Literal["review", "audit"] | None
    created_at: datetime
    created_by: str
    queued_at: datetime | None
    claimed_by: str | None
    claim_expires_at: datetime | None
    review: ReviewOut | None = None


class QueueNextResponse(BaseModel):
    item: ItemOut | None = Field(description="The item you now hold (null: the queue is empty).")
    queue_length: int = Field(description="Items waiting to be claimed.")
    reviewed_by_you: int


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: int = Field(ge=1, le=MAX_ID)
    label: str = Field(min_length=1, max_length=MAX_KEY_CHARS)


class PolicyOut(BaseModel):
    version: int
    policy_id: str
    active: bool
    created_at: datetime
    created_by: str
    note: str
    labels: list[str]
    rule: str
    threshold: float | None
    class_thresholds: dict[str, float | None] | None
    target_accuracy: float | None
    delta: float | None
    summary: str


class Interval(BaseModel):
    low: float
    high: float
    level: float


class AuditAccuracy(BaseModel):
    reviewed: int = Field(description="Audited auto items with a review.")
    correct: int
    accuracy: float | None
    interval: Interval | None = Field(description="Clopper-Pearson interval of the accuracy.")
    target: float | None = Field(description="The accuracy the active policy guarantees.")
    verdict: str = Field(description="no_data, below_target, meets_target or consistent_with_target")


class StatsResponse(BaseModel):
    policy_version: int | None
    overall: dict[str, Any] = Field(description="ReviewStore.stats() over all items.")
    active_policy: dict[str, Any] | None = Field(description="The same counts for the active policy's items.")
    audit: AuditAccuracy = Field(description="Audited accuracy of the active policy's auto items.")
    drift: dict[str, Any] | None = Field(description="howsure.service.drift report (null if unavailable).")
    drift_error: str | None = None
    batching: dict[str, Any]


class HealthResponse(BaseModel):
    status: Literal["ok"]
    version: str
    model: str
    policy_version: int | None


def item_out(record: ItemRecord, review: ReviewRecord | None = None) -> ItemOut:
    return ItemOut(
        item_id=record.id, external_id=record.external_id, request_id=record.request_id, label=record.prediction,
        confidence=record.confidence, probabilities=record.probabilities, decision=record.decision,
        policy_version=record.policy_version, policy_id=record.policy_id, text=record.text, status=record.status,
        queue_reason=record.queue_reason, created_at=record.created_at, created_by=record.created_by,
        queued_at=record.queued_at, claimed_by=record.claimed_by, claim_expires_at=record.claim_expires_at,
        review=None if review is None else ReviewOut(**vars(review)),
    )


def policy_out(record: PolicyRecord) -> PolicyOut:
    body = record.body
    guarantee = body.get("guarantee") or {}
    try:
        summary = record.to_policy().summary()
    except (HowsureError, KeyError, TypeError) as exc:  # an odd stored body must not break the listing
        summary = f"(cannot summarise: {exc})"
    return PolicyOut(
        version=record.version, policy_id=record.policy_id, active=record.active, created_at=record.created_at,
        created_by=record.created_by, note=record.note, labels=list(body.get("labels", [])), rule=body.get("rule", ""),
        threshold=body.get("threshold"), class_thresholds=body.get("class_thresholds"),
        target_accuracy=guarantee.get("target_accuracy"), delta=guarantee.get("delta"), summary=summary,
    )
