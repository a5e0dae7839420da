"""Policy versions over the API: list them, read one's JSON, activate one (a rollback)."""

from typing import Any

from fastapi import APIRouter, Depends

from howsure.errors import PolicyError
from howsure.service.errors import ServiceUnavailable, found_or_404
from howsure.service.routers.deps import ERRORS, PolicyVersion, admin, reviewer
from howsure.service.schemas import ErrorResponse, PolicyOut, policy_out
from howsure.service.state import Service, get_service
from howsure.service.store import UserRecord

__all__ = ["router"]

router = APIRouter(tags=["policies"])


@router.get("/v1/policies", response_model=list[PolicyOut], responses=ERRORS)
def policies(user: UserRecord = Depends(reviewer), service: Service = Depends(get_service)) -> list[PolicyOut]:
    """Every policy version, newest first."""
    return [policy_out(record) for record in service.store.policy_history()]


@router.get("/v1/policies/{version}", responses={**ERRORS, 404: {"model": ErrorResponse}})
def policy_body(version: int = PolicyVersion, user: UserRecord = Depends(reviewer),
                service: Service = Depends(get_service)) -> dict[str, Any]:
    """The full policy JSON of one version."""
    return found_or_404(service.store.get_policy, version).body


@router.post("/v1/policies/{version}/activate", response_model=PolicyOut,
             responses={**ERRORS, 404: {"model": ErrorResponse}})
def activate(version: int = PolicyVersion, user: UserRecord = Depends(admin),
             service: Service = Depends(get_service)) -> PolicyOut:
    """Make a stored version the active one (a rollback when it is older)."""
    record = found_or_404(service.store.get_policy, version)
    try:
        service.loaded(record)
    except ServiceUnavailable as exc:
        raise PolicyError(str(exc)) from None
    return policy_out(service.store.activate_policy(version, actor=user.name))
