"""The review queue over the API: claim the next item, submit a review, skip an item."""

from fastapi import APIRouter, Depends

from howsure.service.routers.deps import ERRORS, ItemId, item_or_404, reviewer
from howsure.service.schemas import ErrorResponse, ItemOut, QueueNextResponse, ReviewIn, ReviewOut, item_out
from howsure.service.state import Service, get_service
from howsure.service.store import UserRecord

__all__ = ["router"]

router = APIRouter(tags=["review"])


@router.get("/v1/queue/next", response_model=QueueNextResponse, responses=ERRORS)
def queue_next(user: UserRecord = Depends(reviewer), service: Service = Depends(get_service)) -> QueueNextResponse:
    """Claim the next item to review (the one you already hold, if any) for `lease_seconds`."""
    store = service.store
    record = store.claim_next(user.name, lease_seconds=service.lease_seconds)
    return QueueNextResponse(item=None if record is None else item_out(record),
                             queue_length=store.queue_length(), reviewed_by_you=store.reviewer_count(user.name))


@router.post("/v1/reviews", response_model=ReviewOut, status_code=201,
             responses={**ERRORS, 400: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
                        409: {"model": ErrorResponse}})
def post_review(body: ReviewIn, user: UserRecord = Depends(reviewer),
                service: Service = Depends(get_service)) -> ReviewOut:
    """Label an item you hold. 409 when it is reviewed already or someone else holds it."""
    item_or_404(service.store, body.item_id)
    review = service.store.submit_review(body.item_id, user.name, body.label)
    return ReviewOut(**vars(review))


@router.post("/v1/items/{item_id}/skip", response_model=ItemOut,
             responses={**ERRORS, 404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
def skip(item_id: int = ItemId, user: UserRecord = Depends(reviewer), service: Service = Depends(get_service)) -> ItemOut:
    """Give an item you hold back to the end of the queue."""
    item_or_404(service.store, item_id)
    return item_out(service.store.release(item_id, user.name))
