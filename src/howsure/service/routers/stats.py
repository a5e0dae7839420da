"""GET /v1/stats: automation rate, audited accuracy against the guarantee, queue, drift and
batching; `gather_stats` is what the stats page shows too."""

import math
from typing import Any

from fastapi import APIRouter, Depends

from howsure.errors import DatabaseUnavailable, HowsureError
from howsure.service.audit import audit_accuracy, weighted_audit
from howsure.service.routers.deps import ERRORS, reviewer
from howsure.service.schemas import StatsResponse
from howsure.service.state import Service, get_service
from howsure.service.store import UserRecord

__all__ = ["router", "gather_stats"]

router = APIRouter(tags=["review"])


@router.get("/v1/stats", response_model=StatsResponse, responses=ERRORS)
def stats(user: UserRecord = Depends(reviewer), service: Service = Depends(get_service)) -> StatsResponse:
    """Automation rate, audited accuracy against the guarantee, queue, drift, batching."""
    return gather_stats(service)


def gather_stats(service: Service) -> StatsResponse:
    """Everything the stats page and GET /v1/stats show."""
    store = service.store
    record = store.active_policy()
    overall = store.stats()
    active = store.stats(policy_version=record.version) if record is not None else None
    target = ((record.body.get("guarantee") or {}).get("target_accuracy")) if record is not None else None
    weighted = weighted_audit(store, record.version) if record is not None else None
    drift, drift_error = None, None
    try:
        # Local on purpose: the drift check may be absent (the page then says so), which a test
        # simulates by blanking this module name in sys.modules.
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


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
