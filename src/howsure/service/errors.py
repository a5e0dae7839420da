"""How errors become responses: the service's own error types, the HTTP status of every
library error, and the JSON error body every handler answers with."""

import logging
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from howsure.errors import (
    ClaimError, DatabaseUnavailable, DataError, HowsureError, PolicyError, StoreError, TaskError,
)
from howsure.service import auth, health
from howsure.service.admission import ClientGone, RequestTooLarge
from howsure.service.batching import BatcherClosed
from howsure.service.throttle import RetryLater

__all__ = ["NotFound", "ServiceUnavailable", "error_status", "found_or_404", "error_response",
           "database_unavailable", "HTTP_CODES", "branch_errors", "install_error_handlers"]

log = logging.getLogger("howsure.service")


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


BODY_BRANCHES = ("ClassifyBatch", "ClassifyItem")


def branch_errors(errors: Sequence[dict]) -> list[dict]:
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


async def howsure_error(request: Request, exc: HowsureError) -> JSONResponse:
    status, code = error_status(exc)
    if code == "database_unavailable":  # the driver's message names the database: log it only
        log.warning("database error on %s %s: %s", request.method, request.url.path, exc)
        return database_unavailable("the database failed on this request; try again (it was logged)")
    if isinstance(exc, RetryLater):
        return error_response(status, code, str(exc), retry_after=exc.retry_after_header)
    return error_response(status, code, str(exc))

async def closed(request: Request, exc: BatcherClosed) -> JSONResponse:
    return error_response(503, "unavailable", str(exc))

async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    details = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in branch_errors(exc.errors())]
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"]) or "request"
    return error_response(422, "invalid_input", f"{where}: {first['msg']}", details=details[:20])

async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such path {request.url.path!r}; the API is described at /openapi.json"
    response = error_response(exc.status_code, code, message)
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response

async def crash(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "the server failed on this request; it was logged")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error as ``{"error": {"code": ..., "message": ...}}``."""
    app.add_exception_handler(HowsureError, howsure_error)
    app.add_exception_handler(BatcherClosed, closed)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, crash)
