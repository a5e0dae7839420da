"""Liveness (/healthz, never waits for the database) and readiness (/readyz, the database
answers and its write lock is free), without authentication."""

import logging
from typing import Any

from fastapi import APIRouter, Depends

from howsure import __version__
from howsure.service import health
from howsure.service.errors import database_unavailable
from howsure.service.schemas import ErrorResponse, HealthResponse
from howsure.service.state import Service, get_service

__all__ = ["router"]

log = logging.getLogger("howsure.service")
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse)
async def healthz(service: Service = Depends(get_service)) -> HealthResponse:
    """Liveness: the process answers. It never waits for the database (that is /readyz);
    policy_version is the active version the service last read."""
    return HealthResponse(status="ok", version=__version__, model=str(getattr(service.backend, "model_id", "?")),
                          policy_version=service.known_policy_version)


@router.get("/readyz", response_model=health.ReadyResponse, responses={503: {"model": ErrorResponse}})
async def readyz(service: Service = Depends(get_service)) -> Any:
    """Readiness: the database answers and its write lock is free (within 3 s); else 503."""
    ready = await health.database_ready(service.store)
    if not ready.ok:
        log.warning("readiness check failed: %s", ready.message)
        return database_unavailable("the database does not answer or stays locked; try again later")
    service.known_policy_version = ready.policy_version
    return health.ReadyResponse(status="ready", database="ok", policy_version=ready.policy_version)
