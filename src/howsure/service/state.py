"""What the service's routes share: the store, the backend, the batchers, the settings and the
loaded policies (`Service`, kept on ``app.state.service``), and the dependency that hands it to a
route."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials

from howsure.backends.base import Backend
from howsure.core.task import Task
from howsure.decisions.policy import Policy, adapter_checksum
from howsure.errors import ClaimError, DatabaseUnavailable, PolicyError
from howsure.service import auth, sessions
from howsure.service.admission import RequestLimits
from howsure.service.batching import MicroBatcher
from howsure.service.errors import ServiceUnavailable
from howsure.service.store import ItemRecord, NewItem, PolicyRecord, ReviewStore, UserRecord
from howsure.service.throttle import FailureThrottle, address_key

__all__ = ["BackendFactory", "LoadedPolicy", "Service", "get_service"]


#: Builds the backend of a policy that names a model or adapter other than the service's own:
#: ``factory(model, adapter_directory_or_None)``.
BackendFactory = Callable[[str, "str | None"], Backend]


@dataclass(frozen=True)
class LoadedPolicy:
    """A stored policy version made ready to decide: the Policy, the Task it prompts with, and
    the (model, adapter directory) pair whose backend scores for it (None: the service's own)."""

    version: int
    policy_id: str
    policy: Policy
    task: Task
    scorer: tuple[str, str] | None = None


class Service:
    """What the endpoints share: the store, the backend, the batcher and the settings."""

    def __init__(self, store: ReviewStore, backend: Backend, *, audit_rate: float, max_batch: int, max_wait_ms: float,
                 lease_seconds: float, seed: int | None, session_secret: str | bytes | None,
                 secure_cookies: bool, limits: RequestLimits, throttle: FailureThrottle,
                 max_batch_tokens: int, max_queue_tokens: int, max_client_tokens: int,
                 backend_factory: BackendFactory | None = None, model: str | None = None) -> None:
        self.store = store
        self.backend = backend
        # One backend per (model, adapter) pair a policy names, built once and kept: rolling back
        # to a policy served before is instant, and its scores are those it was certified on.
        self.backend_factory = backend_factory
        self.model = model
        self._backends: dict[tuple[str, str], Backend] = {}
        self._backends_lock = threading.Lock()
        self.audit_rate = audit_rate
        self.lease_seconds = lease_seconds
        self.secure_cookies = secure_cookies
        self.sessions = auth.SessionSigner(session_secret)
        self.limits = limits
        self.throttle = throttle
        # Texts cost their tokens: a batch holds at most max_batch_tokens of them (so one batch
        # runs a bounded time), batches take turns across clients, and the tokens waiting are
        # bounded in all and per client (429 beyond). A batch reads the active policy once, so a
        # database or policy that fails fails the whole batch at once (no item would fare better alone).
        self.batcher: MicroBatcher = MicroBatcher(
            self._score, max_batch=max_batch, max_wait_ms=max_wait_ms, max_batch_cost=max_batch_tokens,
            max_queue_cost=max_queue_tokens, max_client_cost=max_client_tokens,
            fail_whole=(ServiceUnavailable, DatabaseUnavailable))
        # Requests answered by one forward pass are stored together; no waiting beyond what queued.
        self.writer: MicroBatcher = MicroBatcher(self._write, max_batch=256, max_wait_ms=0)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._policies: dict[int, LoadedPolicy] = {}
        self._policies_lock = threading.Lock()
        # The active version last read from the database: what /healthz reports without asking it.
        self.known_policy_version: int | None = None

    # ------------------------------------------------------------------ policies
    def loaded(self, record: PolicyRecord) -> LoadedPolicy:
        """The ready-to-use form of a stored policy version (cached: versions never change)."""
        with self._policies_lock:
            cached = self._policies.get(record.version)
        if cached is not None and cached.policy_id == record.policy_id:
            return cached
        policy = Policy.from_dict(record.body)
        if not policy.task:
            raise ServiceUnavailable(
                f"policy version {record.version} has no task, so the service cannot build prompts; "
                "certify the policy with its task (howsure thresholds --task ...) and add it again")
        loaded = LoadedPolicy(record.version, record.policy_id, policy, Task.from_dict(policy.task),
                              self._scorer_of(record.version, policy))
        if loaded.scorer is not None:
            self.backend_for(loaded)  # built (and checked) now, not while a batch waits
        with self._policies_lock:
            self._policies[record.version] = loaded
        return loaded

    def _scorer_of(self, version: int, policy: Policy) -> tuple[str, str] | None:
        """(model, adapter directory) of a policy with an adapter, after checking that the
        directory still holds the weights the policy was certified with; None without one."""
        if policy.adapter is None:
            return None
        directory, expected = policy.adapter["directory"], policy.adapter["checksum"]
        try:
            found = adapter_checksum(directory)
        except PolicyError as exc:
            raise ServiceUnavailable(f"policy version {version} scores through an adapter that cannot be read: {exc}") from None
        if found != expected:
            raise ServiceUnavailable(
                f"policy version {version}'s adapter {directory!r} has other weights (sha256 {found[:16]}) than the "
                f"ones it was certified with ({expected[:16]}); restore them or roll back (howsure policy rollback)")
        if self.backend_factory is None:
            raise ServiceUnavailable(f"policy version {version} scores through adapter {directory!r}, but this "
                                     "service was started without a way to load models (howsure serve does)")
        return (policy.model_id or self.model or "", directory)

    def backend_for(self, loaded: LoadedPolicy) -> Backend:
        """The backend that scores for ``loaded``: the service's own, or its (model, adapter) one."""
        if loaded.scorer is None:
            return self.backend
        with self._backends_lock:
            backend = self._backends.get(loaded.scorer)
            if backend is None:
                assert self.backend_factory is not None  # checked by _scorer_of
                backend = self._backends[loaded.scorer] = self.backend_factory(*loaded.scorer)
        return backend

    def active(self) -> LoadedPolicy:
        record = self.store.active_policy()
        self.known_policy_version = None if record is None else record.version
        if record is None:
            raise ServiceUnavailable("no policy is active; start the service with `howsure serve --policy FILE`")
        return self.loaded(record)

    def admit(self, texts: Sequence[str], *, batch: bool) -> list[int]:
        """Each text's tokens, once the texts are within the limits and a policy can decide them.

        Which policy decides is read when the texts are scored (`_score`, once per forward
        pass), not here: the request needs no database read of its own, and a policy activated
        while it waited decides it. Until the service has seen an active policy, this reads the
        database so that a service without one answers 503 at once (a policy once active is
        only ever replaced by another, never removed)."""
        tokens = self.limits.check(texts, batch=batch)
        if self.known_policy_version is None:
            self.active()
        return tokens

    # ------------------------------------------------------------------ classification
    def _score(self, texts: list[str]) -> list[tuple[LoadedPolicy, np.ndarray, Any]]:
        """The batch function: read the active policy, score every text with its backend and
        decide them, once for the whole batch. Deciding here lets every request the batch
        answers go on to the database write at once (one group commit)."""
        loaded = self.active()
        scores = self.backend_for(loaded).label_scores(loaded.task, texts, top_k=1)
        raw = np.vstack([np.asarray(score.probabilities, dtype=np.float64) for score in scores])
        return [(loaded, row, decision) for row, decision in zip(raw, loaded.policy.decide(raw))]

    def _audit_draw(self) -> bool:
        with self._rng_lock:
            return self._rng.random() < self.audit_rate

    def new_items(self, items: Sequence[Any], outcomes: Sequence[Any]) -> list[NewItem]:
        """The `NewItem`s of one request from its (policy, raw probabilities, decision)
        outcomes, with the audit draw for the auto ones. The items of one request may have been
        scored in two batches on either side of a policy activation: each names its own."""
        new_items = []
        for item, (loaded, row, decision) in zip(items, outcomes):
            audit = decision.decision == "auto" and self._audit_draw()
            new_items.append(NewItem(
                text=item.text, prediction=decision.label, confidence=float(decision.confidence),
                probabilities=decision.probabilities,
                raw_probabilities={label: float(p) for label, p in zip(loaded.policy.labels, row)},
                decision=decision.decision,
                queue_reason="review" if decision.decision == "review" else ("audit" if audit else None),
                policy_version=loaded.version, policy_id=loaded.policy_id,
                external_id=item.id, request_id=item.request_id,
                # The chance this auto item had to be audited: recalibration weights by its inverse.
                audit_rate=self.audit_rate if decision.decision == "auto" else None,
            ))
        return new_items

    def _write(self, requests: list[tuple[str, list[NewItem]]]) -> list[list[ItemRecord]]:
        """The writer's batch function: the items of concurrent requests in one transaction per
        client (a group commit: one fsync instead of one per request). When it fails, the
        batcher runs each request on its own, so a request is stored whole or not at all."""
        by_actor: dict[str, list[int]] = {}
        for index, (actor, _) in enumerate(requests):
            by_actor.setdefault(actor, []).append(index)
        results: list[list[ItemRecord]] = [[] for _ in requests]
        for actor, indices in by_actor.items():
            records = self.store.add_items([item for i in indices for item in requests[i][1]], actor=actor)
            start = 0
            for i in indices:
                results[i] = records[start:start + len(requests[i][1])]
                start += len(requests[i][1])
        return results

    @staticmethod
    def check_request_ids(items: Sequence[Any], records: Sequence[ItemRecord], actor: str) -> None:
        """A request_id names one item of one client: a retry gets its own item back, and
        nobody reads another client's item by guessing its key."""
        for item, record in zip(items, records):
            if item.request_id is not None and (record.created_by != actor or record.text != item.text):
                raise ClaimError(f"request_id {item.request_id!r} was already used for another item; "
                                 "use a new key for a new text")

    # ------------------------------------------------------------------ reviewers
    def user_of(self, credentials: HTTPAuthorizationCredentials | None, address: str | None = None) -> UserRecord:
        """The user of an API request's bearer token; `auth.Unauthorized` without a valid one,
        `Throttled` while ``address`` has failed too often (checked before the token)."""
        token = auth.bearer_token(None if credentials is None else f"Bearer {credentials.credentials}")
        user = self.authenticate(token, address)
        if user is None:
            raise auth.Unauthorized("unknown or revoked token (or its user is disabled)")
        return user

    def authenticate(self, token: str, address: str | None) -> UserRecord | None:
        """``store.authenticate(token)`` under the failure throttle of the client address."""
        keys = [address_key(address)]
        self.throttle.check(keys)
        user = self.store.authenticate(token)
        if user is None:
            self.throttle.failed(keys)
        return user

    def session_user(self, request: Request) -> tuple[UserRecord, auth.Session] | None:
        """The signed-in reviewer of a page request, or None. The server-side session must be
        live: signing out, revoking its token or disabling the user ends it. A failing database
        raises `DatabaseUnavailable` (a 503, not a signed-out user)."""
        session = self.sessions.load(request.cookies.get(auth.SESSION_COOKIE))
        if session is None:
            return None
        user = sessions.session_user(self.store, session.sid)
        if user is None or user.name != session.user or user.role not in ("admin", "reviewer"):
            return None
        return user, session


async def get_service(request: Request) -> Service:
    """The route dependency: the `Service` of the app that received ``request``. A coroutine so
    that FastAPI calls it on the event loop: /healthz must not wait for a worker thread."""
    return request.app.state.service
