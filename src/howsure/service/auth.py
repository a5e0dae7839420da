"""Who may do what: bearer tokens and roles for the API, signed session cookies and CSRF
tokens for the review pages.

API clients send ``Authorization: Bearer hs_...``; the store keeps only the token's sha256
(`howsure.service.store.ReviewStore.authenticate`). Roles:

    client     POST /v1/classify, and reading back the items it sent
    reviewer   the review queue, reviews, stats, policies and the pages
    admin      everything, including activating a policy version

The pages use a session cookie instead: after a reviewer signs in with a token, the browser
holds ``payload.signature`` where the payload names the user and carries the session's id and
CSRF token, and the signature is an HMAC-SHA256 under the server's secret. The id names a row
of the store's ``sessions`` table (`howsure.service.sessions`): signing out ends it there, so
the cookie stops working at once everywhere. The cookie is HttpOnly and SameSite=Strict; every
form POST must echo the CSRF token in a hidden field as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from howsure.errors import AuthError

ROLES = ("admin", "reviewer", "client")
#: What each permission needs; admin has every permission.
CLASSIFY = ("client",)
REVIEW = ("reviewer",)
ADMIN = ()

SESSION_COOKIE = "howsure_session"
LOGIN_COOKIE = "howsure_login"
"""Holds the sign-in form's CSRF value between GET and POST /login (see `new_login_nonce`)."""
SESSION_MAX_AGE_S = 12 * 3600
SECRET_ENV = "HOWSURE_SESSION_SECRET"


class Unauthorized(AuthError):
    """No credentials, or credentials nobody recognises (HTTP 401)."""

    status_code = 401
    code = "unauthorized"


class Forbidden(AuthError):
    """Known user, wrong role, or a form without its CSRF token (HTTP 403)."""

    status_code = 403
    code = "forbidden"


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; `Unauthorized` otherwise."""
    if not header:
        raise Unauthorized("missing 'Authorization: Bearer <token>' header; create a token with "
                           "`howsure tokens create NAME --db URL`")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(f"the Authorization header must be 'Bearer <token>', got scheme {scheme[:20]!r}")
    return token


def check_role(user: Any, allowed: tuple[str, ...], what: str) -> None:
    """`Forbidden` unless ``user.role`` is admin or one of ``allowed``.

    Parameters
    ----------
    user : UserRecord
    allowed : tuple of str
        Roles besides admin that may do ``what``.
    what : str
        The action, for the message ("classify", "review items").
    """
    if user.role == "admin" or user.role in allowed:
        return
    needed = " or ".join(("admin",) + tuple(allowed))
    raise Forbidden(f"user {user.name!r} has role {user.role!r}; to {what} the role must be {needed}")


# ---------------------------------------------------------------------------- sessions
@dataclass(frozen=True)
class Session:
    """A signed-in browser: the user's name, the session's CSRF token, when it expires, which
    token signed in (the first 12 hex digits of its sha256, as `TokenRecord.hash_prefix`), and
    the id of its server-side session (`howsure.service.sessions`), without which it is void."""

    user: str
    csrf: str
    expires: float
    token: str = ""
    sid: str = ""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


SECRET_MIN_BYTES = 32


def default_secret_path() -> Path:
    """Where `howsure serve` keeps its session key when ``HOWSURE_SESSION_SECRET`` is unset:
    the platform's user config directory (``~/.config/howsure/session-secret`` on Linux)."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("howsure")) / "session-secret"


def load_or_create_secret(path: str | Path) -> bytes:
    """The session key kept in ``path``, made (64 random hex digits, mode 0600) if there is
    none yet, so that restarting the service, or a second process on the same machine, keeps
    reviewers signed in.

    Creation is atomic (written to a private file, then hard-linked into place): processes
    starting together all read the same key. A key file that others may read, or that is too
    short, is refused rather than trusted, as ssh does with private keys."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(SECRET_MIN_BYTES) + "\n")
            try:
                os.link(draft, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
            finally:
                draft.unlink()
        mode = path.stat().st_mode & 0o777
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise AuthError(f"cannot use the session secret file {str(path)!r}: {exc.strerror or exc}; "
                        f"set {SECRET_ENV} or pass --session-secret-file") from None
    if mode & 0o077:
        raise AuthError(f"the session secret file {str(path)!r} may be read by other users (mode {mode:o}); "
                        f"run `chmod 600 {path}`")
    if len(secret) < SECRET_MIN_BYTES:
        raise AuthError(f"the session secret file {str(path)!r} holds {len(secret)} bytes, expected at least "
                        f"{SECRET_MIN_BYTES}; delete it and a new one is made")
    return secret


class SessionSigner:
    """Signs and checks session cookies with HMAC-SHA256.

    Parameters
    ----------
    secret : str or bytes, optional
        The signing key. Several server processes behind one address need the same one (set
        ``HOWSURE_SESSION_SECRET``, or on one machine let `howsure serve` share its key file,
        `load_or_create_secret`); without one a random key is made, and sessions end when the
        process restarts.
    max_age_s : float
        How long a session lasts after signing in.
    """

    def __init__(self, secret: str | bytes | None = None, *, max_age_s: float = SESSION_MAX_AGE_S) -> None:
        if secret is None:
            secret = os.environ.get(SECRET_ENV) or secrets.token_bytes(32)
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if len(secret) < 16:
            raise AuthError(f"the session secret must be at least 16 bytes, got {len(secret)}")
        # A derived key: the secret may be reused elsewhere without these signatures colliding.
        self._key = hashlib.sha256(b"howsure-session\0" + secret).digest()
        self.max_age_s = max_age_s

    def _sign(self, payload: str) -> str:
        return _b64encode(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def new_session(self, user: str, *, token: str = "", sid: str = "",
                    now: float | None = None) -> tuple[Session, str]:
        """A fresh session for ``user`` (new CSRF token) and its cookie value; ``token`` names
        the token it was opened with (its hash prefix), ``sid`` the server-side session."""
        now = time.time() if now is None else now
        session = Session(user=user, csrf=secrets.token_urlsafe(32), expires=now + self.max_age_s, token=token,
                          sid=sid)
        body = json.dumps({"u": session.user, "c": session.csrf, "e": session.expires, "t": session.token,
                           "s": session.sid}, separators=(",", ":"))
        payload = _b64encode(body.encode("utf-8"))
        return session, f"{payload}.{self._sign(payload)}"

    def load(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session of a cookie value, or None if it is missing, forged, garbled or expired."""
        if not cookie or len(cookie) > 4096 or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        try:
            expected = self._sign(payload)
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(expected, signature):
            return None
        try:
            data = json.loads(_b64decode(payload))
            session = Session(user=str(data["u"]), csrf=str(data["c"]), expires=float(data["e"]),
                              token=str(data.get("t", "")), sid=str(data.get("s", "")))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if session.expires < (time.time() if now is None else now):
            return None
        return session


def new_login_nonce() -> str:
    """The sign-in form's CSRF value: set as the `LOGIN_COOKIE` and echoed in the form, so a
    sign-in posted from another site (which cannot read the cookie) is refused. Without it a
    page elsewhere could sign a reviewer's browser in as the attacker's user."""
    return secrets.token_urlsafe(24)


def _same_token(expected: str | None, submitted: str | None) -> bool:
    """Constant-time equality of two tokens; a missing or empty one never matches."""
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode("utf-8", "replace"), submitted.encode("utf-8", "replace"))


def login_nonce_matches(cookie: str | None, submitted: str | None) -> bool:
    """Whether the sign-in form's CSRF field equals its cookie (constant-time)."""
    return _same_token(cookie, submitted)


def csrf_matches(session: Session | None, submitted: str | None) -> bool:
    """Whether a form's CSRF field equals the session's token (constant-time)."""
    return _same_token(None if session is None else session.csrf, submitted)
