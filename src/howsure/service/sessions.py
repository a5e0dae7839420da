"""Server-side sessions of the review pages, kept in the store's ``sessions`` table.

    from howsure.service import sessions
    sid = sessions.open_session(store, token, max_age_s=12 * 3600)   # at sign-in
    user = sessions.session_user(store, sid)                          # each page: None = signed out
    sessions.end_session(store, sid)                                  # sign out

The signed cookie (`howsure.service.auth.SessionSigner`) carries a random session id; the
store keeps only its sha256, with the user, the token that signed in and the expiry. A session
counts while its row is not ended, not expired, its token not revoked and its user not
disabled, so signing out ends it for every process serving the database, also a copy of the
cookie kept elsewhere, and also after a restart.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from howsure.errors import StoreError
from howsure.service.db import sessions as sessions_t, tokens as tokens_t, users as users_t
from howsure.service.store.records import UserRecord, hash_token

if TYPE_CHECKING:
    from howsure.service.store import ReviewStore

__all__ = ["open_session", "session_user", "end_session"]


def _digest(session_id: str) -> str:
    return hash_token(session_id)


def open_session(store: "ReviewStore", token: str, *, max_age_s: float) -> str:
    """Start a session for the user of ``token`` (a valid API token) and return its id.

    Sessions that have expired are deleted on the way. `StoreError` when the token is unknown
    or revoked or its user disabled.
    """
    session_id = secrets.token_urlsafe(32)
    with store._write() as connection:
        now = store.now()
        row = connection.execute(
            sa.select(tokens_t.c.id, tokens_t.c.user_id, users_t.c.name)
            .join(users_t, users_t.c.id == tokens_t.c.user_id)
            .where(tokens_t.c.token_hash == hash_token(token), tokens_t.c.revoked_at.is_(None),
                   users_t.c.disabled.is_(False))
        ).first()
        if row is None:
            raise StoreError("cannot open a session: the token is unknown or revoked, or its user is disabled")
        connection.execute(sessions_t.delete().where(sessions_t.c.expires_at < now))
        connection.execute(sessions_t.insert().values(
            session_hash=_digest(session_id), user_id=row.user_id, token_id=row.id, created_at=now,
            expires_at=now + timedelta(seconds=max_age_s)))
        store._event(connection, row.name, "session_started", at=now, detail={"token_id": row.id})
    return session_id


def session_user(store: "ReviewStore", session_id: str) -> UserRecord | None:
    """The user of a live session, or None (unknown, ended or expired session, revoked
    token, disabled user)."""
    if not session_id:
        return None
    row = store._first(
        sa.select(users_t.c.id, users_t.c.name, users_t.c.role, users_t.c.disabled)
        .select_from(sessions_t)
        .join(users_t, users_t.c.id == sessions_t.c.user_id)
        .join(tokens_t, tokens_t.c.id == sessions_t.c.token_id)
        .where(sessions_t.c.session_hash == _digest(session_id), sessions_t.c.ended_at.is_(None),
               sessions_t.c.expires_at > store.now(), tokens_t.c.revoked_at.is_(None),
               users_t.c.disabled.is_(False))
    )
    return None if row is None else UserRecord(id=row.id, name=row.name, role=row.role, disabled=bool(row.disabled))


def end_session(store: "ReviewStore", session_id: str) -> bool:
    """Sign out: end the session (True), or nothing when it had ended already (False)."""
    if not session_id:
        return False
    with store._write() as connection:
        now = store.now()
        row = connection.execute(
            sa.select(sessions_t.c.id, sessions_t.c.token_id, users_t.c.name)
            .join(users_t, users_t.c.id == sessions_t.c.user_id)
            .where(sessions_t.c.session_hash == _digest(session_id), sessions_t.c.ended_at.is_(None))
        ).first()
        if row is None:
            return False
        connection.execute(sessions_t.update().where(sessions_t.c.id == row.id).values(ended_at=now))
        store._event(connection, row.name, "session_ended", at=now, detail={"token_id": row.token_id})
    return True
