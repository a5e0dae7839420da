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

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from howsure import __version__
from howsure.backends.base import Backend
from howsure.backends.openmp import release_thread_pool
from howsure.errors import DataError, PolicyError
from howsure.service.admission import MAX_BATCH_TOKENS, RequestLimits
from howsure.service.audit import audit_accuracy, clopper_pearson
from howsure.service.errors import ServiceUnavailable, error_response, install_error_handlers
from howsure.service.hardening import DOCS_PATHS, SecurityHeaders
from howsure.service.routers import health, items, pages, policies, queue, stats
from howsure.service.routers.classify import classify_router
from howsure.service.state import BackendFactory, Service
from howsure.service.store import ReviewStore
from howsure.service.throttle import FailureThrottle

__all__ = ["create_app", "BodyLimit", "clopper_pearson", "audit_accuracy"]

log = logging.getLogger("howsure.service")

HERE = Path(__file__).resolve().parent


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
    store: ReviewStore,
    backend: Backend,
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
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    max_client_tokens: int = 16384,
    max_queue_tokens: int = 65536,
    auth_failures: int = 20,
    auth_window_s: float = 60.0,
    api_docs: bool = False,
    backend_factory: BackendFactory | None = None,
    model: str | None = None,
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
    backend_factory : callable, optional
        ``factory(model, adapter_dir)`` builds the backend of a policy with an ``adapter``
        (`howsure finetune --db` makes them); each (model, adapter) pair is built once and
        kept. Without it such a policy answers 503. ``backend`` scores every other policy.
    model : str, optional
        The model ``backend`` runs, for adapters of policies that name no model.
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
                      max_client_tokens=max_client_tokens, backend_factory=backend_factory, model=model)
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
    install_error_handlers(app)
    app.include_router(classify_router(max_text_chars, max_items_per_request))
    app.include_router(items.router)
    app.include_router(queue.router)
    app.include_router(stats.router)
    app.include_router(policies.router)
    app.include_router(health.router)
    app.include_router(pages.router)
    return app
