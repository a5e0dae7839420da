"""The server-rendered pages: sign in with a token, review one item at a time, stats. Forms
carry a CSRF token; the session is a signed cookie backed by a server-side session row."""

import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from howsure import __version__
from howsure.errors import ClaimError, DatabaseUnavailable, DataError, StoreError
from howsure.service import auth, health, sessions
from howsure.service.hardening import PAGE_CSP
from howsure.service.routers.stats import gather_stats
from howsure.service.schemas import MAX_ID, policy_out
from howsure.service.state import Service, get_service
from howsure.service.store import UserRecord, hash_token
from howsure.service.throttle import Throttled

if TYPE_CHECKING:
    import jinja2

__all__ = ["router", "TEMPLATES", "PAGE_HEADERS"]

log = logging.getLogger("howsure.service")

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
PAGE_HEADERS = {
    # No inline script or style anywhere: the pages' JS and CSS are files under /static.
    "Content-Security-Policy": PAGE_CSP,
    "Referrer-Policy": "same-origin",
}  # nosniff and no-store come from `SecurityHeaders`, on every response

FLASH = {
    "saved": "Saved item {item}.",
    "skipped": "Skipped item {item}; it went back to the end of the queue.",
    "conflict": "Item {item} was not saved: {reason}",
}
REVIEW_ACTIONS = ("review", "skip")
CONFLICT_REASONS = {
    "taken": "your lease ran out and another reviewer took it over.",
    "reviewed": "it is already reviewed.",
    "label": "pick one of the labels first.",
}

router = APIRouter(include_in_schema=False)


@cache
def templates() -> "jinja2.Environment":
    """The pages' templates, loaded on the first page served."""
    # Local for weight: jinja2 is needed by the pages only, not by the API or `import` of the app.
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every value is escaped: an item's "<script>" is shown as text
        undefined=jinja2.StrictUndefined,
    )



def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = templates().get_template(name).render(version=__version__, **context)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)

def to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)

def check_csrf(session: auth.Session, form: Any) -> None:
    if not auth.csrf_matches(session, form.get("csrf")):
        raise auth.Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")

async def read_form(request: Request) -> Any:
    try:
        return await request.form(max_files=0, max_fields=20)
    except Exception as exc:  # noqa: BLE001 - multipart's errors are not one class
        raise DataError(f"the form could not be read: {exc}") from None

def forbidden_page(user: UserRecord, session: auth.Session, message: str) -> HTMLResponse:
    return page("error.html", 403, title="Forbidden", message=message, user=user, session=session)

@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/review", status_code=303)

def login_page(service: Service, status: int = 200, error: str | None = None) -> HTMLResponse:
    """The sign-in form with a fresh CSRF value in it and in its cookie."""
    nonce = auth.new_login_nonce()
    response = page("login.html", status, user=None, session=None, error=error, login_csrf=nonce)
    response.set_cookie(auth.LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict",
                        secure=service.secure_cookies, path="/login")
    return response

@router.get("/login")
def login_form(request: Request, service: Service = Depends(get_service)) -> Response:
    if service.session_user(request) is not None:
        return RedirectResponse("/review", status_code=303)
    return login_page(service)

@router.post("/login")
async def login(request: Request, service: Service = Depends(get_service)) -> Response:
    form = await read_form(request)
    if not auth.login_nonce_matches(request.cookies.get(auth.LOGIN_COOKIE), form.get("csrf")):
        return login_page(service, 403, "The sign-in form expired or came from another page. Sign in again here.")
    token = str(form.get("token") or "").strip()
    try:
        user = await run_in_threadpool(service.authenticate, token, request.client and request.client.host)
    except Throttled as exc:
        response = login_page(service, 429, f"{exc}.")
        response.headers["Retry-After"] = exc.retry_after_header
        return response
    if user is None:
        return login_page(service, 401, "That token is unknown or revoked. Ask an admin for one (howsure tokens create).")
    if user.role not in ("admin", "reviewer"):
        return login_page(service, 403, f"User {user.name} has role {user.role}; the review pages need reviewer or admin.")
    sid = await run_in_threadpool(sessions.open_session, service.store, token, max_age_s=service.sessions.max_age_s)
    _, cookie = service.sessions.new_session(user.name, token=hash_token(token)[:12], sid=sid)
    response = RedirectResponse("/review", status_code=303)
    response.set_cookie(auth.SESSION_COOKIE, cookie, max_age=int(service.sessions.max_age_s), httponly=True,
                        samesite="strict", secure=service.secure_cookies, path="/")
    response.delete_cookie(auth.LOGIN_COOKIE, path="/login")
    return response

@router.post("/logout")
async def logout(request: Request, service: Service = Depends(get_service)) -> Response:
    signed_in = await run_in_threadpool(service.session_user, request)
    if signed_in is not None:
        check_csrf(signed_in[1], await read_form(request))
        await run_in_threadpool(sessions.end_session, service.store, signed_in[1].sid)
    response = to_login()
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response

@router.get("/review")
def review_page(request: Request, done: str | None = None, item: int | None = None,
                reason: str | None = None, service: Service = Depends(get_service)) -> Response:
    signed_in = service.session_user(request)
    if signed_in is None:
        return to_login()
    user, session = signed_in
    flash = None
    if done in FLASH and item is not None and 1 <= item <= MAX_ID:
        flash = FLASH[done].format(item=item, reason=CONFLICT_REASONS.get(reason or "", "it changed meanwhile."))
    record = service.store.claim_next(user.name, lease_seconds=service.lease_seconds)
    context: dict[str, Any] = {
        "user": user, "session": session, "flash": flash, "flash_kind": done,
        "queue_length": service.store.queue_length(), "my_count": service.store.reviewer_count(user.name),
        "item": None,
    }
    if record is not None:
        labels = service.store.get_policy(record.policy_version).labels
        context.update(
            item=record, labels=labels, audit=record.queue_reason == "audit",
            suggestion=record.prediction, confidence=record.confidence,
            lease_minutes=max(1, round(service.lease_seconds / 60)),
        )
    return page("review.html", **context)

@router.post("/review")
async def review_submit(request: Request, service: Service = Depends(get_service)) -> Response:
    signed_in = await run_in_threadpool(service.session_user, request)
    if signed_in is None:
        return to_login()
    user, session = signed_in
    form = await read_form(request)
    try:
        check_csrf(session, form)
    except auth.Forbidden as exc:
        return forbidden_page(user, session, str(exc))
    try:
        item_id = int(str(form.get("item_id", "")))
    except ValueError:
        item_id = 0
    if not 1 <= item_id <= MAX_ID:
        return page("error.html", 400, title="Bad request", message="The form names no item.",
                    user=user, session=session)
    action = form.get("action", "review")
    if action not in REVIEW_ACTIONS:
        return page("error.html", 400, title="Bad request", user=user, session=session,
                    message=f"The form's action {str(action)[:50]!r} is not one of {list(REVIEW_ACTIONS)}; "
                            "nothing was saved.")
    label = form.get("label")
    try:
        if action == "skip":
            await run_in_threadpool(service.store.release, item_id, user.name)
            return RedirectResponse(f"/review?done=skipped&item={item_id}", status_code=303)
        if not label:
            return RedirectResponse(f"/review?done=conflict&item={item_id}&reason=label", status_code=303)
        await run_in_threadpool(service.store.submit_review, item_id, user.name, str(label))
    except ClaimError as exc:
        reason = "reviewed" if "already reviewed" in str(exc) else "taken"
        return RedirectResponse(f"/review?done=conflict&item={item_id}&reason={reason}", status_code=303)
    except DatabaseUnavailable as exc:
        log.warning("database error on POST /review: %s", exc)
        response = page("error.html", 503, title="Not saved", user=user, session=session,
                        message="The database failed, so the review was not saved. Try again.")
        response.headers["Retry-After"] = str(health.RETRY_AFTER_S)
        return response
    except StoreError as exc:
        return page("error.html", 400, title="Not saved", message=str(exc), user=user, session=session)
    return RedirectResponse(f"/review?done=saved&item={item_id}", status_code=303)

@router.get("/stats")
def stats_page(request: Request, service: Service = Depends(get_service)) -> Response:
    signed_in = service.session_user(request)
    if signed_in is None:
        return to_login()
    user, session = signed_in
    stats = gather_stats(service)
    history = [policy_out(record) for record in service.store.policy_history()[:20]]
    return page("stats.html", user=user, session=session, stats=stats, history=history)
