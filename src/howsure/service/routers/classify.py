"""POST /v1/classify: score texts in micro-batches, decide under the active policy, store, answer."""

# No `from __future__ import annotations`: FastAPI must resolve the request models built inside
# classify_router (their limits are settings), which string annotations would hide from it.
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from howsure.service.admission import unless_disconnected
from howsure.service.routers.deps import ERRORS, classifier
from howsure.service.schemas import ClassifiedItem, ClassifyResponse, ErrorResponse, request_models
from howsure.service.state import Service, get_service
from howsure.service.store import UserRecord

__all__ = ["classify_router"]


def classify_router(max_text_chars: int, max_items: int) -> APIRouter:
    """The classify route with request models carrying this app's limits (their OpenAPI schema
    shows them), hence a router per app rather than one at import."""
    router = APIRouter(tags=["classify"])
    ClassifyItem, ClassifyBatch = request_models(max_text_chars, max_items)

    @router.post("/v1/classify", response_model=ClassifyResponse,
                 responses={**ERRORS, 409: {"model": ErrorResponse}, 429: {"model": ErrorResponse},
                            503: {"model": ErrorResponse}})
    async def classify(request: Request, body: ClassifyBatch | ClassifyItem,  # type: ignore[valid-type]
                       user: UserRecord = Depends(classifier),
                       service: Service = Depends(get_service)) -> ClassifyResponse:
        """Classify one text (`{"text": ...}`) or several (`{"items": [...]}`).

        Every item gets the predicted label, its calibrated confidence, the probabilities, the
        decision (`auto` or `review`) and the policy version that decided. Items are stored
        before the answer is sent; a retry with the same `request_id` returns the stored item.
        Long input: a text over the per-text token limit is 422, a request over the per-request
        total 413; while the model's queue is full (in all or for this client) 429 with
        Retry-After. Texts of a client that disconnects before they are scored are dropped.
        """
        items = body.items if isinstance(body, ClassifyBatch) else [body]
        tokens = await run_in_threadpool(service.admit, [item.text for item in items],
                                         batch=isinstance(body, ClassifyBatch))
        outcomes = await unless_disconnected(request, service.batcher.submit(
            [item.text for item in items], client=user.name, costs=tokens))
        new_items = service.new_items(items, outcomes)  # no await: the batch's requests queue together
        [records] = await service.writer.submit([(user.name, new_items)])
        service.check_request_ids(items, records, user.name)
        return ClassifyResponse(items=[
            ClassifiedItem(item_id=r.id, external_id=r.external_id, request_id=r.request_id, label=r.prediction,
                           confidence=r.confidence, probabilities=r.probabilities, decision=r.decision,
                           policy_version=r.policy_version, policy_id=r.policy_id)
            for r in records
        ])

    return router
