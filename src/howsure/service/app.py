"""The review service's web app: a JSON API under ``/v1`` and server-rendered review pages.

    from howsure.service.app import create_app
    app = create_app(ReviewStore("reviews.db"), load_backend("smollm2-135m"), audit_rate=0.05)
    uvicorn.run(app, host="127.0.0.1", port=8000)      # what `howsure serve` does

One item's way through `POST /v1/classify`: the text joins the micro-batcher's queue
(`howsure.service.batching`), one ``backend.label_scores`` call scores a batch of texts from
concurrent requests, the active policy turns the raw label probabilities into a calibrated
confidence and a decision (auto or review), a random ``audit_rate`` share of the auto items is
queued for auditing as well, and the items are stored *before* the response is sent: an
acknowledged item is in the database. The requests one forward pass answered are written
together (one transaction per client, each request whole or not at all).

Errors are JSON everywhere: ``{"error": {"code": ..., "message": ...}}`` with 401/403 for
authentication and roles, 404 for unknown items and routes, 409 for queue conflicts, 413 for a
body (or a request's tokens) over the limit, 422 for invalid input (a text over the token
limit among it, `howsure.service.admission`), 429 with Retry-After when the model's queue is
full or an address failed to authenticate too often (`howsure.service.throttle`), 503 while no
policy is active, and 503 with ``Retry-After`` when the database fails or stays locked (a
request waits for a locked database at most 3 s).
"""

# No `from __future__ import annotations`: FastAPI must resolve the request models built inside
# create_app (their limits are settings), which string annotations would hide from it.
import logging
import math
import random
import threading
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from fastapi import Depends, FastAPI, Path as PathParam, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from howsure import __version__
from howsure.backends.openmp import release_thread_pool
from howsure.errors import ClaimError, DataError, DatabaseUnavailable, HowsureError, PolicyError, StoreError, TaskError
from howsure.service import auth, health
from howsure.service.admission import ClientGone, RequestLimits, RequestTooLarge, unless_disconnected
from howsure.service.batching import BatcherClosed, MicroBatcher
from howsure.service.hardening import DOCS_PATHS, PAGE_CSP, SecurityHeaders
from howsure.service.throttle import FailureThrottle, RetryLater, Throttled, address_key

log = logging.getLogger("howsure.service")

HERE = Path(__file__).resolve().parent
MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL
MAX_KEY_CHARS = 200  # external ids, request ids, labels (the store's column widths)

PAGE_HEADERS = {
    # No inline script or style anywhere: the pages' JS and CSS are files under /static.
    "Content-Security-Policy": PAGE_CSP,
    "Referrer-Policy": "same-origin",
}  # nosniff and no-store come from `SecurityHeaders`, on every response


# ---------------------------------------------------------------------------- errors
class NotFound(HowsureError):
    """An item, policy version or route that does not exist (HTTP 404)."""


class ServiceUnavailable(HowsureError):
    """The service cannot classify right now: no active policy, or it is shutting down (503)."""


def error_status(exc: HowsureError) -> tuple[int, str]:
    """The HTTP status and error code of a library error."""
    if isinstance(exc, auth.Unauthorized | auth.Forbidden):
        return exc.status_code, exc.code
    if isinstance(exc, NotFound):
        return 404, "not_found"
    if isinstance(exc, RequestTooLarge):
        return 413, "too_large"
    if isinstance(exc, ClientGone):
        return 499, "client_gone"  # nginx's "client closed request": nobody reads it, the log does
    if isinstance(exc, RetryLater):
        return 429, "too_many_requests"
    if isinstance(exc, ClaimError):
        return 409, "conflict"
    if isinstance(exc, ServiceUnavailable):
        return 503, "unavailable"
    if isinstance(exc, DatabaseUnavailable):
        return 503, "database_unavailable"
    if isinstance(exc, StoreError):
        return 400, "bad_request"
    if isinstance(exc, PolicyError | DataError | TaskError):
        return 422, "invalid_input"
    return 400, "bad_request"


def found_or_404(lookup: Callable[..., Any], *args: Any, message: str | None = None) -> Any:
    """``lookup(*args)``, with the store's refusal (an unknown id) as `NotFound` (404); a failing
    database stays `DatabaseUnavailable` (503), not a missing record."""
    try:
        return lookup(*args)
    except DatabaseUnavailable:
        raise
    except StoreError as exc:
        raise NotFound(message or str(exc)) from None


def error_response(status: int, code: str, message: str, *, retry_after: str | None = None,
                   **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = {"error": {"code": code, "message": message, **extra}}
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers or None)


def database_unavailable(message: str) -> JSONResponse:
    """503 for a database that failed or stays locked, with the wait before a retry."""
    return error_response(503, "database_unavailable", message, retry_after=str(health.RETRY_AFTER_S))


HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 406: "not_acceptable", 413: "too_large", 415: "unsupported_media_type",
              422: "invalid_input", 429: "too_many_requests", 503: "unavailable"}


# ---------------------------------------------------------------------------- API models
class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable: unauthorized, forbidden, not_found, conflict, too_large, "
                                  "invalid_input, unavailable, ...")
    message: str = Field(description="What was wrong and what was expected instead.")


class ErrorResponse(BaseModel):
    error: ErrorBody


def _clean_string(value: str | None, what: str) -> str | None:
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


def _request_models(max_text_chars: int, max_items: int) -> tuple[type[BaseModel], type[BaseModel]]:
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
            return _clean_string(value, "text")

        @field_validator("id", "request_id")
        @classmethod
        def _keys(cls, value: str | None, info: ValidationInfo) -> str | None:
            return _clean_string(value, info.field_name)

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


BODY_BRANCHES = ("ClassifyBatch", "ClassifyItem")


def _branch_errors(errors: Sequence[dict]) -> list[dict]:
    """The validation errors of the body form the client meant.

    The classify body is one item or a batch; pydantic reports why it is neither. A body with
    "items" meant a batch, any other a single item: keep that branch's errors and drop the
    branch name from their location, so the message reads ``body.text: ...``.
    """
    branches: dict[str, list[dict]] = {}
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if len(loc) >= 2 and loc[0] == "body" and loc[1] in BODY_BRANCHES:
            branches.setdefault(loc[1], []).append({**error, "loc": ("body", *loc[2:])})
    if not branches:
        return list(errors)
    body = next((e.get("input") for e in errors if tuple(e.get("loc", ()))[:1] == ("body",)), None)
    meant = "ClassifyBatch" if isinstance(body, dict) and "items" in body else "ClassifyItem"
    if isinstance(body, dict) and meant in branches:
        return branches[meant]
    return [error for group in branches.values() for error in group]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# ---------------------------------------------------------------------------- statistics
def clopper_pearson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for a proportion.

    Parameters
    ----------
    successes, n : int
        ``0 <= successes <= n``, ``n >= 1``.
    level : float
        Coverage, e.g. 0.95.

    Returns
    -------
    (low, high) : tuple of float
    """
    from scipy.stats import beta

    if n < 1 or not 0 <= successes <= n:
        raise DataError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    alpha = 1 - level
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    high = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return low, high


def audit_accuracy(stats: dict[str, Any] | None, target: float | None, level: float = 0.95,
                   weighted: Any = None) -> AuditAccuracy:
    """Audited accuracy with its interval, and how it stands against the policy's target.

    With ``weighted`` (`howsure.service.audit.WeightedAudit`) the accuracy is weighted by the
    inverse of each item's audit rate and the interval uses the effective sample size."""
    reviewed = int((stats or {}).get("audit_reviewed") or 0)
    correct = int((stats or {}).get("audit_correct") or 0)
    if reviewed == 0:
        return AuditAccuracy(reviewed=0, correct=0, accuracy=None, interval=None, target=target, verdict="no_data")
    accuracy, n = correct / reviewed, float(reviewed)
    if weighted is not None and weighted.weighted and weighted.reviewed == reviewed:
        accuracy, n = weighted.accuracy, weighted.effective_n
    low, high = clopper_pearson(min(accuracy * n, n), n, level)
    if target is None:
        verdict = "no_target"
    elif high < target:
        verdict = "below_target"
    elif low >= target:
        verdict = "meets_target"
    else:
        verdict = "consistent_with_target"
    return AuditAccuracy(reviewed=reviewed, correct=correct, accuracy=accuracy,
                         interval=Interval(low=low, high=high, level=level), target=target, verdict=verdict)


# ---------------------------------------------------------------------------- the service state
@dataclass(frozen=True)
class LoadedPolicy:
    """A stored policy version made ready to decide: the Policy and the Task it prompts with."""

    version: int
    policy_id: str
    policy: Any  # howsure.policy.Policy
    task: Any  # howsure.task.Task


class Service:
    """What the endpoints share: the store, the backend, the batcher and the settings."""

    def __init__(self, store: Any, backend: Any, *, audit_rate: float, max_batch: int, max_wait_ms: float,
                 lease_seconds: float, seed: int | None, session_secret: str | bytes | None,
                 secure_cookies: bool, limits: RequestLimits, throttle: FailureThrottle,
                 max_batch_tokens: int, max_queue_tokens: int, max_client_tokens: int) -> None:
        self.store = store
        self.backend = backend
        self.audit_rate = audit_rate
        self.lease_seconds = lease_seconds
        self.secure_cookies = secure_cookies
        self.sessions = auth.SessionSigner(session_secret)
        self.limits = limits
        self.throttle = throttle
        # Texts cost their tokens: a batch holds at most max_batch_tokens of them (so one batch
        # runs a bounded time), batches take turns across clients, and the tokens waiting are
        # bounded in all and per client (429 beyond).
        self.batcher: MicroBatcher = MicroBatcher(
            self._score, max_batch=max_batch, max_wait_ms=max_wait_ms, max_batch_cost=max_batch_tokens,
            max_queue_cost=max_queue_tokens, max_client_cost=max_client_tokens)
        # Requests answered by one forward pass are stored together; no waiting beyond what queued.
        self.writer: MicroBatcher = MicroBatcher(self._write, max_batch=256, max_wait_ms=0)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._policies: dict[int, LoadedPolicy] = {}
        self._policies_lock = threading.Lock()
        # The active version last read from the database: what /healthz reports without asking it.
        self.known_policy_version: int | None = None

    # ------------------------------------------------------------------ policies
    def loaded(self, record: Any) -> LoadedPolicy:
        """The ready-to-use form of a stored policy version (cached: versions never change)."""
        with self._policies_lock:
            cached = self._policies.get(record.version)
        if cached is not None and cached.policy_id == record.policy_id:
            return cached
        from howsure.policy import Policy
        from howsure.task import Task

        policy = Policy.from_dict(record.body)
        if not policy.task:
            raise ServiceUnavailable(
                f"policy version {record.version} has no task, so the service cannot build prompts; "
                "certify the policy with its task (howsure thresholds --task ...) and add it again")
        loaded = LoadedPolicy(record.version, record.policy_id, policy, Task.from_dict(policy.task))
        with self._policies_lock:
            self._policies[record.version] = loaded
        return loaded

    def active(self) -> LoadedPolicy:
        record = self.store.active_policy()
        self.known_policy_version = None if record is None else record.version
        if record is None:
            raise ServiceUnavailable("no policy is active; start the service with `howsure serve --policy FILE`")
        return self.loaded(record)

    def admit(self, texts: Sequence[str], *, batch: bool) -> tuple[LoadedPolicy, list[int]]:
        """The active policy and each text's tokens, once the texts are within the limits."""
        tokens = self.limits.check(texts, batch=batch)
        return self.active(), tokens

    # ------------------------------------------------------------------ classification
    def _score(self, pairs: list[tuple[LoadedPolicy, str]]) -> list[tuple[np.ndarray, Any]]:
        """The batch function: score and decide every text, one backend call per policy among
        the pairs (normally one). Deciding here, for the whole batch, lets every request the
        batch answers go on to the database write at once (one group commit)."""
        groups: dict[int, list[int]] = {}
        for index, (loaded, _) in enumerate(pairs):
            groups.setdefault(id(loaded), []).append(index)
        results: list[Any] = [None] * len(pairs)
        for indices in groups.values():
            loaded = pairs[indices[0]][0]
            scores = self.backend.label_scores(loaded.task, [pairs[i][1] for i in indices], top_k=1)
            raw = np.vstack([np.asarray(score.probabilities, dtype=np.float64) for score in scores])
            for i, row, decision in zip(indices, raw, loaded.policy.decide(raw)):
                results[i] = (row, decision)
        return results

    def _audit_draw(self) -> bool:
        with self._rng_lock:
            return self._rng.random() < self.audit_rate

    def new_items(self, loaded: LoadedPolicy, items: Sequence[Any], outcomes: Sequence[Any]) -> list[Any]:
        """The `NewItem`s of one request from its (raw probabilities, decision) pairs, with the
        audit draw for the auto ones."""
        from howsure.service.store import NewItem

        labels = loaded.policy.labels
        new_items = []
        for item, (row, decision) in zip(items, outcomes):
            audit = decision.decision == "auto" and self._audit_draw()
            new_items.append(NewItem(
                text=item.text, prediction=decision.label, confidence=float(decision.confidence),
                probabilities=decision.probabilities,
                raw_probabilities={label: float(p) for label, p in zip(labels, row)},
                decision=decision.decision,
                queue_reason="review" if decision.decision == "review" else ("audit" if audit else None),
                policy_version=loaded.version, policy_id=loaded.policy_id,
                external_id=item.id, request_id=item.request_id,
                # The chance this auto item had to be audited: recalibration weights by its inverse.
                audit_rate=self.audit_rate if decision.decision == "auto" else None,
            ))
        return new_items

    def _write(self, requests: list[tuple[str, list[Any]]]) -> list[list[Any]]:
        """The writer's batch function: the items of concurrent requests in one transaction per
        client (a group commit: one fsync instead of one per request). When it fails, the
        batcher runs each request on its own, so a request is stored whole or not at all."""
        by_actor: dict[str, list[int]] = {}
        for index, (actor, _) in enumerate(requests):
            by_actor.setdefault(actor, []).append(index)
        results: list[list[Any]] = [[] for _ in requests]
        for actor, indices in by_actor.items():
            records = self.store.add_items([item for i in indices for item in requests[i][1]], actor=actor)
            start = 0
            for i in indices:
                results[i] = records[start:start + len(requests[i][1])]
                start += len(requests[i][1])
        return results

    @staticmethod
    def check_request_ids(items: Sequence[Any], records: Sequence[Any], actor: str) -> None:
        """A request_id names one item of one client: a retry gets its own item back, and
        nobody reads another client's item by guessing its key."""
        for item, record in zip(items, records):
            if item.request_id is not None and (record.created_by != actor or record.text != item.text):
                raise ClaimError(f"request_id {item.request_id!r} was already used for another item; "
                                 "use a new key for a new text")

    # ------------------------------------------------------------------ reviewers
    def user_of(self, credentials: HTTPAuthorizationCredentials | None, address: str | None = None) -> Any:
        """The user of an API request's bearer token; `auth.Unauthorized` without a valid one,
        `Throttled` while ``address`` has failed too often (checked before the token)."""
        token = auth.bearer_token(None if credentials is None else f"Bearer {credentials.credentials}")
        user = self.authenticate(token, address)
        if user is None:
            raise auth.Unauthorized("unknown or revoked token (or its user is disabled)")
        return user

    def authenticate(self, token: str, address: str | None) -> Any:
        """``store.authenticate(token)`` under the failure throttle of the client address."""
        keys = [address_key(address)]
        self.throttle.check(keys)
        user = self.store.authenticate(token)
        if user is None:
            self.throttle.failed(keys)
        return user

    def session_user(self, request: Request) -> tuple[Any, auth.Session] | None:
        """The signed-in reviewer of a page request, or None. The server-side session must be
        live: signing out, revoking its token or disabling the user ends it. A failing database
        raises `DatabaseUnavailable` (a 503, not a signed-out user)."""
        from howsure.service import sessions

        session = self.sessions.load(request.cookies.get(auth.SESSION_COOKIE))
        if session is None:
            return None
        user = sessions.session_user(self.store, session.sid)
        if user is None or user.name != session.user or user.role not in ("admin", "reviewer"):
            return None
        return user, session


def item_out(record: Any, review: Any = None) -> ItemOut:
    return ItemOut(
        item_id=record.id, external_id=record.external_id, request_id=record.request_id, label=record.prediction,
        confidence=record.confidence, probabilities=record.probabilities, decision=record.decision,
        policy_version=record.policy_version, policy_id=record.policy_id, text=record.text, status=record.status,
        queue_reason=record.queue_reason, created_at=record.created_at, created_by=record.created_by,
        queued_at=record.queued_at, claimed_by=record.claimed_by, claim_expires_at=record.claim_expires_at,
        review=None if review is None else ReviewOut(**vars(review)),
    )


def policy_out(record: Any) -> PolicyOut:
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


def gather_stats(service: Service) -> StatsResponse:
    """Everything the stats page and GET /v1/stats show."""
    store = service.store
    record = store.active_policy()
    overall = store.stats()
    active = store.stats(policy_version=record.version) if record is not None else None
    target = ((record.body.get("guarantee") or {}).get("target_accuracy")) if record is not None else None
    from howsure.service.audit import weighted_audit

    weighted = weighted_audit(store, record.version) if record is not None else None
    drift, drift_error = None, None
    try:
        from howsure.service.drift import drift_report
    except ImportError:  # the drift module ships separately while the service grows
        drift_error = "the drift check is not installed"
    else:
        try:
            drift = _json_safe(drift_report(store).to_dict())
        except DatabaseUnavailable:
            raise
        except HowsureError as exc:
            drift_error = str(exc)
    return StatsResponse(
        policy_version=None if record is None else record.version, overall=_json_safe(overall),
        active_policy=_json_safe(active), audit=audit_accuracy(active, target, weighted=weighted), drift=drift,
        drift_error=drift_error, batching=service.batcher.stats.to_dict(),
    )


# ---------------------------------------------------------------------------- limits
class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 before any endpoint
    sees it, whether the client declares its length or streams it in chunks."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await error_response(400, "bad_request", "Content-Length is not a number")(scope, receive, send)
                return
            if length > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; the endpoint sees the disconnect
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        response = error_response(413, "too_large", f"the request body is over the limit of {self.max_bytes} bytes; "
                                                    "send fewer or shorter items per request")
        await response(scope, receive, send)


# ---------------------------------------------------------------------------- the app
def create_app(
    store: Any,
    backend: Any,
    *,
    audit_rate: float = 0.05,
    max_batch: int = 32,
    max_wait_ms: float = 10,
    lease_seconds: float = 300,
    max_items_per_request: int = 256,
    max_text_chars: int = 20000,
    max_body_bytes: int = 1_000_000,
    seed: int | None = None,
    session_secret: str | bytes | None = None,
    secure_cookies: bool = False,
    max_text_tokens: int = 1024,
    max_request_tokens: int = 8192,
    max_batch_tokens: int = 1536,
    max_client_tokens: int = 16384,
    max_queue_tokens: int = 65536,
    auth_failures: int = 20,
    auth_window_s: float = 60.0,
    api_docs: bool = False,
) -> FastAPI:
    """Build the review service.

    Parameters
    ----------
    store : howsure.service.store.ReviewStore
        Where items, reviews, policies and users live. The active policy decides.
    backend : howsure.backends.Backend
        The model; its ``label_scores`` is called from one worker thread at a time.
    audit_rate : float in [0, 1]
        Share of auto-decided items also queued for a person, so the accuracy of automation
        is measured on an unbiased sample.
    max_batch, max_wait_ms : int, float
        Micro-batching: most texts per forward pass, and the longest a text waits for others.
    lease_seconds : float
        How long a reviewer holds a claimed item before someone else may take it.
    max_items_per_request, max_text_chars, max_body_bytes : int
        Request limits (422 for too many items or too long a text, 413 for too large a body).
    seed : int, optional
        Seed of the audit draw (tests); None draws from the OS.
    session_secret : str or bytes, optional
        Key of the review pages' session cookies (else ``HOWSURE_SESSION_SECRET`` or random).
    secure_cookies : bool
        Mark the session cookie Secure (behind HTTPS).
    max_text_tokens, max_request_tokens : int
        Most tokens (the model's tokenizer, the text alone) in one text (422 beyond: texts are
        refused, never truncated) and in one request's texts together (413 beyond).
    max_batch_tokens : int
        Most text tokens in one micro-batch, so one forward pass runs a bounded time while
        batches take turns across clients (a lone longer text still runs alone).
    max_client_tokens, max_queue_tokens : int
        Most tokens waiting for or in the model from one client and from all clients; a request
        over either is answered 429 with Retry-After.
    auth_failures, auth_window_s : int, float
        An address that presented ``auth_failures`` unknown tokens (API or sign-in form) within
        ``auth_window_s`` seconds is answered 429 with Retry-After until the window frees up.
    api_docs : bool
        Serve the interactive API docs at /docs and /redoc. They load script from a CDN, so
        they are off unless asked for; /openapi.json is always served.
    """
    if isinstance(audit_rate, bool) or not isinstance(audit_rate, int | float) or not 0 <= audit_rate <= 1:
        raise DataError(f"audit_rate must be a number in [0, 1], got {audit_rate!r}")
    token_bounds = (("max_text_tokens", max_text_tokens), ("max_request_tokens", max_request_tokens),
                    ("max_client_tokens", max_client_tokens), ("max_queue_tokens", max_queue_tokens))
    # Each option is checked here under its own name (the batcher and throttle name theirs otherwise).
    for name, value in (("max_items_per_request", max_items_per_request), ("max_text_chars", max_text_chars),
                        ("max_body_bytes", max_body_bytes), ("max_batch_tokens", max_batch_tokens),
                        ("auth_failures", auth_failures), *token_bounds):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name} must be an integer >= 1, got {value!r}")
    for name, value in (("lease_seconds", lease_seconds), ("auth_window_s", auth_window_s)):
        if not value > 0:
            raise DataError(f"{name} must be > 0, got {value!r}")
    for (name, value), (next_name, next_value) in zip(token_bounds, token_bounds[1:]):
        # A request the per-request limit admits must fit the queue bounds, or its 429 would never end.
        if value > next_value:
            raise DataError(f"{name} ({value}) must not be over {next_name} ({next_value})")
    limits = RequestLimits(backend, max_text_tokens=max_text_tokens, max_request_tokens=max_request_tokens)
    throttle = FailureThrottle(auth_failures, auth_window_s)
    record = store.active_policy()
    service = Service(store, backend, audit_rate=float(audit_rate), max_batch=max_batch, max_wait_ms=max_wait_ms,
                      lease_seconds=lease_seconds, seed=seed, session_secret=session_secret,
                      secure_cookies=secure_cookies, limits=limits, throttle=throttle,
                      max_batch_tokens=max_batch_tokens, max_queue_tokens=max_queue_tokens,
                      max_client_tokens=max_client_tokens)
    service.known_policy_version = None if record is None else record.version
    if record is not None:
        try:
            service.loaded(record)  # a policy the service cannot use fails now, not on the first request
        except ServiceUnavailable as exc:
            raise PolicyError(str(exc)) from None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The model was loaded on this thread and scores on the batcher's: hand back this
        # thread's OpenMP workers so the two pools do not share the cores (backends.openmp).
        release_thread_pool()
        await service.batcher.start()
        await service.writer.start()
        try:
            yield
        finally:
            await service.batcher.stop()
            await service.writer.stop()

    app = FastAPI(
        title="howsure review service",
        version=__version__,
        description=(
            "Classify texts under a certified policy, route the unsure ones to people, review them.\n\n"
            "Authenticate with `Authorization: Bearer <token>` (`howsure tokens create NAME --db URL`). "
            "Roles: **client** classifies; **reviewer** works the queue; **admin** does everything. "
            "Errors are `{\"error\": {\"code\": ..., \"message\": ...}}`."
        ),
        lifespan=lifespan,
        docs_url=DOCS_PATHS[0] if api_docs else None,
        redoc_url=DOCS_PATHS[1] if api_docs else None,
        openapi_tags=[
            {"name": "classify", "description": "Classify texts (role client)."},
            {"name": "review", "description": "The review queue (role reviewer)."},
            {"name": "policies", "description": "Policy versions; activating one is a rollback (role admin)."},
            {"name": "health", "description": "Liveness (/healthz) and readiness (/readyz), no authentication."},
        ],
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(SecurityHeaders)  # outermost: its headers go on the 413s of BodyLimit too
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    ClassifyItem, ClassifyBatch = _request_models(max_text_chars, max_items_per_request)
    bearer = HTTPBearer(auto_error=False, description="A token made by `howsure tokens create`.")
    errors = {code: {"model": ErrorResponse} for code in (401, 403, 413, 422)}

    def role(allowed: tuple[str, ...], what: str):
        def dependency(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Any:
            user = service.user_of(credentials, request.client.host if request.client else None)
            auth.check_role(user, allowed, what)
            return user
        return dependency

    classifier = role(auth.CLASSIFY, "classify")
    reviewer = role(auth.REVIEW, "work the review queue")
    admin = role(auth.ADMIN, "manage policies")
    anyone = role(("client", "reviewer"), "read items")

    # ------------------------------------------------------------------ error handlers
    @app.exception_handler(HowsureError)
    async def howsure_error(request: Request, exc: HowsureError) -> JSONResponse:
        status, code = error_status(exc)
        if code == "database_unavailable":  # the driver's message names the database: log it only
            log.warning("database error on %s %s: %s", request.method, request.url.path, exc)
            return database_unavailable("the database failed on this request; try again (it was logged)")
        if isinstance(exc, RetryLater):
            return error_response(status, code, str(exc), retry_after=exc.retry_after_header)
        return error_response(status, code, str(exc))

    @app.exception_handler(BatcherClosed)
    async def closed(request: Request, exc: BatcherClosed) -> JSONResponse:
        return error_response(503, "unavailable", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in _branch_errors(exc.errors())]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"]) or "request"
        return error_response(422, "invalid_input", f"{where}: {first['msg']}", details=details[:20])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such path {request.url.path!r}; the API is described at /openapi.json"
        response = error_response(exc.status_code, code, message)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "the server failed on this request; it was logged")

    # ------------------------------------------------------------------ API
    @app.post("/v1/classify", response_model=ClassifyResponse, tags=["classify"],
              responses={**errors, 409: {"model": ErrorResponse}, 429: {"model": ErrorResponse},
                         503: {"model": ErrorResponse}})
    async def classify(request: Request, body: ClassifyBatch | ClassifyItem,  # type: ignore[valid-type]
                       user: Any = Depends(classifier)) -> ClassifyResponse:
        """Classify one text (`{"text": ...}`) or several (`{"items": [...]}`).

        Every item gets the predicted label, its calibrated confidence, the probabilities, the
        decision (`auto` or `review`) and the policy version that decided. Items are stored
        before the answer is sent; a retry with the same `request_id` returns the stored item.
        Long input: a text over the per-text token limit is 422, a request over the per-request
        total 413; while the model's queue is full (in all or for this client) 429 with
        Retry-After. Texts of a client that disconnects before they are scored are dropped.
        """
        items = body.items if isinstance(body, ClassifyBatch) else [body]
        loaded, tokens = await run_in_threadpool(service.admit, [item.text for item in items],
                                                 batch=isinstance(body, ClassifyBatch))
        outcomes = await unless_disconnected(request, service.batcher.submit(
            [(loaded, item.text) for item in items], client=user.name, costs=tokens))
        new_items = service.new_items(loaded, items, outcomes)  # no await: the batch's requests queue together
        [records] = await service.writer.submit([(user.name, new_items)])
        service.check_request_ids(items, records, user.name)
        return ClassifyResponse(items=[
            ClassifiedItem(item_id=r.id, external_id=r.external_id, request_id=r.request_id, label=r.prediction,
                           confidence=r.confidence, probabilities=r.probabilities, decision=r.decision,
                           policy_version=r.policy_version, policy_id=r.policy_id)
            for r in records
        ])

    def item_or_404(item_id: int) -> Any:
        return found_or_404(store.get_item, item_id, message=f"item {item_id} is not in the store")

    ItemId = PathParam(ge=1, le=MAX_ID, description="The item's id.")

    @app.get("/v1/items/{item_id}", response_model=ItemOut, tags=["review"],
             responses={**errors, 404: {"model": ErrorResponse}})
    def get_item(item_id: int = ItemId, user: Any = Depends(anyone)) -> ItemOut:
        """One item with its decision, queue status and review (clients see their own items)."""
        record = item_or_404(item_id)
        if user.role == "client" and record.created_by != user.name:
            raise NotFound(f"item {item_id} is not in the store")  # no hint that it exists
        return item_out(record, store.get_review(item_id))

    @app.get("/v1/queue/next", response_model=QueueNextResponse, tags=["review"], responses=errors)
    def queue_next(user: Any = Depends(reviewer)) -> QueueNextResponse:
        """Claim the next item to review (the one you already hold, if any) for `lease_seconds`."""
        record = store.claim_next(user.name, lease_seconds=service.lease_seconds)
        return QueueNextResponse(item=None if record is None else item_out(record),
                                 queue_length=store.queue_length(), reviewed_by_you=store.reviewer_count(user.name))

    @app.post("/v1/reviews", response_model=ReviewOut, status_code=201, tags=["review"],
              responses={**errors, 400: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
                         409: {"model": ErrorResponse}})
    def post_review(body: ReviewIn, user: Any = Depends(reviewer)) -> ReviewOut:
        """Label an item you hold. 409 when it is reviewed already or someone else holds it."""
        item_or_404(body.item_id)
        review = store.submit_review(body.item_id, user.name, body.label)
        return ReviewOut(**vars(review))

    @app.post("/v1/items/{item_id}/skip", response_model=ItemOut, tags=["review"],
              responses={**errors, 404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
    def skip(item_id: int = ItemId, user: Any = Depends(reviewer)) -> ItemOut:
        """Give an item you hold back to the end of the queue."""
        item_or_404(item_id)
        return item_out(store.release(item_id, user.name))

    @app.get("/v1/stats", response_model=StatsResponse, tags=["review"], responses=errors)
    def stats(user: Any = Depends(reviewer)) -> StatsResponse:
        """Automation rate, audited accuracy against the guarantee, queue, drift, batching."""
        return gather_stats(service)

    @app.get("/v1/policies", response_model=list[PolicyOut], tags=["policies"], responses=errors)
    def policies(user: Any = Depends(reviewer)) -> list[PolicyOut]:
        """Every policy version, newest first."""
        return [policy_out(record) for record in store.policy_history()]

    @app.get("/v1/policies/{version}", tags=["policies"], responses={**errors, 404: {"model": ErrorResponse}})
    def policy_body(version: int = PathParam(ge=1, le=MAX_ID), user: Any = Depends(reviewer)) -> dict[str, Any]:
        """The full policy JSON of one version."""
        return found_or_404(store.get_policy, version).body

    @app.post("/v1/policies/{version}/activate", response_model=PolicyOut, tags=["policies"],
              responses={**errors, 404: {"model": ErrorResponse}})
    def activate(version: int = PathParam(ge=1, le=MAX_ID), user: Any = Depends(admin)) -> PolicyOut:
        """Make a stored version the active one (a rollback when it is older)."""
        record = found_or_404(store.get_policy, version)
        try:
            service.loaded(record)
        except ServiceUnavailable as exc:
            raise PolicyError(str(exc)) from None
        return policy_out(store.activate_policy(version, actor=user.name))

    @app.get("/healthz", response_model=HealthResponse, tags=["health"])
    async def healthz() -> HealthResponse:
        """Liveness: the process answers. It never waits for the database (that is /readyz);
        policy_version is the active version the service last read."""
        return HealthResponse(status="ok", version=__version__, model=str(getattr(backend, "model_id", "?")),
                              policy_version=service.known_policy_version)

    @app.get("/readyz", response_model=health.ReadyResponse, tags=["health"],
             responses={503: {"model": ErrorResponse}})
    async def readyz() -> Any:
        """Readiness: the database answers and its write lock is free (within 3 s); else 503."""
        ready = await health.database_ready(store)
        if not ready.ok:
            log.warning("readiness check failed: %s", ready.message)
            return database_unavailable("the database does not answer or stays locked; try again later")
        service.known_policy_version = ready.policy_version
        return health.ReadyResponse(status="ready", database="ok", policy_version=ready.policy_version)

    add_pages(app, service)
    return app


# ---------------------------------------------------------------------------- pages
FLASH = {
    "saved": "Saved item {item}.",
    "skipped": "Skipped item {item}; it went back to the end of the queue.",
    "conflict": "Item {item} was not saved: {reason}",
}
REVIEW_ACTIONS = ("review", "skip")
CONFLICT_REASONS = {
    "taken": "your lease ran out and another reviewer took it over.",
    "reviewed": "it is already reviewed.",
    "label": "pick one of the labels first.",
}


def add_pages(app: FastAPI, service: Service) -> None:
    """The server-rendered pages: sign in, review one item at a time, stats."""
    import jinja2

    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,  # every value is escaped: an item's "<script>" is shown as text
        undefined=jinja2.StrictUndefined,
    )
    store = service.store

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = templates.get_template(name).render(version=__version__, **context)
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)

    def to_login() -> RedirectResponse:
        return RedirectResponse("/login", status_code=303)

    def check_csrf(session: auth.Session, form: Any) -> None:
        if not auth.csrf_matches(session, form.get("csrf")):
            raise auth.Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")

    async def read_form(request: Request) -> Any:
        try:
            return await request.form(max_files=0, max_fields=20)
        except Exception as exc:  # noqa: BLE001 - multipart's errors are not one class
            raise DataError(f"the form could not be read: {exc}") from None

    def forbidden_page(user: Any, session: Any, message: str) -> HTMLResponse:
        return page("error.html", 403, title="Forbidden", message=message, user=user, session=session)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/review", status_code=303)

    def login_page(status: int = 200, error: str | None = None) -> HTMLResponse:
        """The sign-in form with a fresh CSRF value in it and in its cookie."""
        nonce = auth.new_login_nonce()
        response = page("login.html", status, user=None, session=None, error=error, login_csrf=nonce)
        response.set_cookie(auth.LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict",
                            secure=service.secure_cookies, path="/login")
        return response

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        if service.session_user(request) is not None:
            return RedirectResponse("/review", status_code=303)
        return login_page()

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await read_form(request)
        if not auth.login_nonce_matches(request.cookies.get(auth.LOGIN_COOKIE), form.get("csrf")):
            return login_page(403, "The sign-in form expired or came from another page. Sign in again here.")
        token = str(form.get("token") or "").strip()
        try:
            user = await run_in_threadpool(service.authenticate, token, request.client and request.client.host)
        except Throttled as exc:
            response = login_page(429, f"{exc}.")
            response.headers["Retry-After"] = exc.retry_after_header
            return response
        if user is None:
            return login_page(401, "That token is unknown or revoked. Ask an admin for one (howsure tokens create).")
        if user.role not in ("admin", "reviewer"):
            return login_page(403, f"User {user.name} has role {user.role}; the review pages need reviewer or admin.")
        from howsure.service import sessions
        from howsure.service.store import hash_token

        sid = await run_in_threadpool(sessions.open_session, store, token, max_age_s=service.sessions.max_age_s)
        _, cookie = service.sessions.new_session(user.name, token=hash_token(token)[:12], sid=sid)
        response = RedirectResponse("/review", status_code=303)
        response.set_cookie(auth.SESSION_COOKIE, cookie, max_age=int(service.sessions.max_age_s), httponly=True,
                            samesite="strict", secure=service.secure_cookies, path="/")
        response.delete_cookie(auth.LOGIN_COOKIE, path="/login")
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        from howsure.service import sessions

        signed_in = await run_in_threadpool(service.session_user, request)
        if signed_in is not None:
            check_csrf(signed_in[1], await read_form(request))
            await run_in_threadpool(sessions.end_session, store, signed_in[1].sid)
        response = to_login()
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
        return response

    @app.get("/review", include_in_schema=False)
    def review_page(request: Request, done: str | None = None, item: int | None = None,
                    reason: str | None = None) -> Response:
        signed_in = service.session_user(request)
        if signed_in is None:
            return to_login()
        user, session = signed_in
        flash = None
        if done in FLASH and item is not None and 1 <= item <= MAX_ID:
            flash = FLASH[done].format(item=item, reason=CONFLICT_REASONS.get(reason or "", "it changed meanwhile."))
        record = store.claim_next(user.name, lease_seconds=service.lease_seconds)
        context: dict[str, Any] = {
            "user": user, "session": session, "flash": flash, "flash_kind": done,
            "queue_length": store.queue_length(), "my_count": store.reviewer_count(user.name), "item": None,
        }
        if record is not None:
            labels = store.get_policy(record.policy_version).labels
            context.update(
                item=record, labels=labels, audit=record.queue_reason == "audit",
                suggestion=record.prediction, confidence=record.confidence,
                lease_minutes=max(1, round(service.lease_seconds / 60)),
            )
        return page("review.html", **context)

    @app.post("/review", include_in_schema=False)
    async def review_submit(request: Request) -> Response:
        signed_in = await run_in_threadpool(service.session_user, request)
        if signed_in is None:
            return to_login()
        user, session = signed_in
        form = await read_form(request)
        try:
            check_csrf(session, form)
        except auth.Forbidden as exc:
            return forbidden_page(user, session, str(exc))
        try:
            item_id = int(str(form.get("item_id", "")))
        except ValueError:
            item_id = 0
        if not 1 <= item_id <= MAX_ID:
            return page("error.html", 400, title="Bad request", message="The form names no item.",
                        user=user, session=session)
        action = form.get("action", "review")
        if action not in REVIEW_ACTIONS:
            return page("error.html", 400, title="Bad request", user=user, session=session,
                        message=f"The form's action {str(action)[:50]!r} is not one of {list(REVIEW_ACTIONS)}; "
                                "nothing was saved.")
        label = form.get("label")
        try:
            if action == "skip":
                await run_in_threadpool(store.release, item_id, user.name)
                return RedirectResponse(f"/review?done=skipped&item={item_id}", status_code=303)
            if not label:
                return RedirectResponse(f"/review?done=conflict&item={item_id}&reason=label", status_code=303)
            await run_in_threadpool(store.submit_review, item_id, user.name, str(label))
        except ClaimError as exc:
            reason = "reviewed" if "already reviewed" in str(exc) else "taken"
            return RedirectResponse(f"/review?done=conflict&item={item_id}&reason={reason}", status_code=303)
        except DatabaseUnavailable as exc:
            log.warning("database error on POST /review: %s", exc)
            response = page("error.html", 503, title="Not saved", user=user, session=session,
                            message="The database failed, so the review was not saved. Try again.")
            response.headers["Retry-After"] = str(health.RETRY_AFTER_S)
            return response
        except StoreError as exc:
            return page("error.html", 400, title="Not saved", message=str(exc), user=user, session=session)
        return RedirectResponse(f"/review?done=saved&item={item_id}", status_code=303)

    @app.get("/stats", include_in_schema=False)
    def stats_page(request: Request) -> Response:
        signed_in = service.session_user(request)
        if signed_in is None:
            return to_login()
        user, session = signed_in
        stats = gather_stats(service)
        history = [policy_out(record) for record in store.policy_history()[:20]]
        return page("stats.html", user=user, session=session, stats=stats, history=history)
