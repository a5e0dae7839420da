"""GET /v1/items/{item_id}: one stored item with its decision, queue status and review."""

from fastapi import APIRouter, Depends

from howsure.service.errors import NotFound
from howsure.service.routers.deps import ERRORS, ItemId, anyone, item_or_404
from howsure.service.schemas import ErrorResponse, ItemOut, item_out
from howsure.service.state import Service, get_service
from howsure.service.store import UserRecord

__all__ = ["router"]

router = APIRouter(tags=["review"])


@router.get("/v1/items/{item_id}", response_model=ItemOut, responses={**ERRORS, 404: {"model": ErrorResponse}})
def get_item(item_id: int = ItemId, user: UserRecord = Depends(anyone),
             service: Service = Depends(get_service)) -> ItemOut:
    """One item with its decision, queue status and review (clients see their own items)."""
    record = item_or_404(service.store, item_id)
    if user.role == "client" and record.created_by != user.name:
        raise NotFound(f"item {item_id} is not in the store")  # no hint that it exists
    return item_out(record, service.store.get_review(item_id))
