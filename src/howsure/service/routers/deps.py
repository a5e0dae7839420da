"""What the API routes depend on: the service state, the caller's user checked against a role,
and the parameters and error responses several routes share."""

from typing import Any, Callable

from fastapi import Depends, Path as PathParam, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from howsure.service import auth
from howsure.service.errors import found_or_404
from howsure.service.schemas import ErrorResponse, MAX_ID
from howsure.service.state import Service, get_service
from howsure.service.store import ItemRecord, ReviewStore, UserRecord

__all__ = ["bearer", "role", "classifier", "reviewer", "admin", "anyone", "ERRORS", "ItemId", "PolicyVersion",
           "item_or_404"]

bearer = HTTPBearer(auto_error=False, description="A token made by `howsure tokens create`.")
# The error responses every authenticated API route documents.
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403, 413, 422)}
ItemId = PathParam(ge=1, le=MAX_ID, description="The item's id.")
PolicyVersion = PathParam(ge=1, le=MAX_ID)


def role(allowed: tuple[str, ...], what: str) -> Callable[..., UserRecord]:
    """A dependency giving the caller's user once its bearer token holds one of ``allowed``."""
    def dependency(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                   service: Service = Depends(get_service)) -> UserRecord:
        user = service.user_of(credentials, request.client.host if request.client else None)
        auth.check_role(user, allowed, what)
        return user
    return dependency


classifier = role(auth.CLASSIFY, "classify")
reviewer = role(auth.REVIEW, "work the review queue")
admin = role(auth.ADMIN, "manage policies")
anyone = role(("client", "reviewer"), "read items")


def item_or_404(store: ReviewStore, item_id: int) -> ItemRecord:
    return found_or_404(store.get_item, item_id, message=f"item {item_id} is not in the store")
