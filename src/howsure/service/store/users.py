"""Users and their API tokens: add, disable, list; create, authenticate, revoke tokens. Only a
token's sha256 is stored (`hash_token`)."""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from howsure.errors import DatabaseUnavailable, StoreError
from howsure.service import db
from howsure.service.db import tokens as tokens_t, users as users_t
from howsure.service.store.base import StoreBase
from howsure.service.store.records import (
    TOKEN_PREFIX, TokenRecord, UserRecord, hash_token, token_record, user_record,
)
from howsure.service.store.validation import check_name, check_text

__all__ = ["UserStore", "LAST_USED_RESOLUTION"]

# authenticate() writes last_used_at at most this often per token: a busy API client must not
# turn every request into a write transaction.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class UserStore(StoreBase):
    """The users and tokens tables."""

    def add_user(self, name: str, role: str, *, actor: str) -> UserRecord:
        """Create a user; `StoreError` if the name is taken or the role unknown."""
        name = check_name(name, "user name")
        actor = check_name(actor, "actor")
        if role not in db.ROLES:
            raise StoreError(f"unknown role {role!r}; expected one of {list(db.ROLES)}")
        try:
            with self._write() as connection:
                now = self.now()
                connection.execute(users_t.insert().values(name=name, role=role, created_at=now, disabled=False))
                self._event(connection, actor, "user_added", at=now, detail={"name": name, "role": role})
        except IntegrityError:
            raise StoreError(f"user {name!r} already exists") from None
        return self.get_user(name)

    def get_user(self, name: str) -> UserRecord:
        """The user called ``name``; `StoreError` when there is none."""
        row = self._first(sa.select(users_t).where(users_t.c.name == name))
        if row is None:
            raise StoreError(f"no user called {name!r}; add one with `howsure users add`")
        return user_record(row)

    def list_users(self) -> list[UserRecord]:
        """Every user, by name."""
        rows = self._rows(sa.select(users_t).order_by(users_t.c.name))
        return [user_record(row) for row in rows]

    def set_user_disabled(self, name: str, disabled: bool, *, actor: str) -> UserRecord:
        """Disable (or enable again) a user: a disabled user's tokens stop authenticating."""
        actor = check_name(actor, "actor")
        with self._write() as connection:
            updated = connection.execute(
                users_t.update().where(users_t.c.name == name).values(disabled=bool(disabled))).rowcount
            if not updated:
                raise StoreError(f"no user called {name!r}")
            self._event(connection, actor, "user_disabled" if disabled else "user_enabled", detail={"name": name})
        return self.get_user(name)

    def create_token(self, user_name: str, *, actor: str, note: str = "") -> str:
        """Create an API token for ``user_name`` and return its plaintext.

        The plaintext (``hs_`` + 43 URL-safe characters) is shown once: only its sha256 is
        stored. `StoreError` when the user does not exist.
        """
        actor = check_name(actor, "actor")
        note = check_text(note, "note")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(token)
        with self._write() as connection:
            user_id = connection.execute(sa.select(users_t.c.id).where(users_t.c.name == user_name)).scalar()
            if user_id is None:
                raise StoreError(f"no user called {user_name!r}; add one with `howsure users add` first")
            now = self.now()
            token_id = connection.execute(tokens_t.insert().values(
                user_id=user_id, token_hash=digest, note=note, created_at=now,
            )).inserted_primary_key[0]
            self._event(connection, actor, "token_created", at=now,
                        detail={"user": user_name, "token_id": token_id, "hash_prefix": digest[:12], "note": note})
        return token

    def authenticate(self, token: str) -> UserRecord | None:
        """The user a token belongs to, or None for an unknown or revoked token or a disabled
        user. Records when the token was last used (at most once a minute)."""
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = hash_token(token)
        row = self._first(
            sa.select(tokens_t.c.id, tokens_t.c.token_hash, tokens_t.c.revoked_at, tokens_t.c.last_used_at,
                      users_t.c.id.label("user_id"), users_t.c.name, users_t.c.role, users_t.c.disabled)
            .join(users_t, users_t.c.id == tokens_t.c.user_id)
            .where(tokens_t.c.token_hash == digest)
        )
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        if row.revoked_at is not None or row.disabled:
            return None
        now = self.now()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            try:
                with self._write() as connection:
                    connection.execute(tokens_t.update().where(tokens_t.c.id == row.id).values(last_used_at=now))
            except DatabaseUnavailable:
                # Bookkeeping only: a locked database must not refuse a request that may
                # only read (the next request records the use).
                pass
        return UserRecord(id=row.user_id, name=row.name, role=row.role, disabled=bool(row.disabled))

    def list_tokens(self, user_name: str | None = None) -> list[TokenRecord]:
        """Stored tokens (never their secrets), oldest first, optionally of one user."""
        query = (sa.select(tokens_t, users_t.c.name.label("user_name"))
                 .join(users_t, users_t.c.id == tokens_t.c.user_id).order_by(tokens_t.c.id))
        if user_name is not None:
            query = query.where(users_t.c.name == user_name)
        rows = self._rows(query)
        return [token_record(row) for row in rows]

    def revoke_token(self, prefix_or_id: str | int, *, actor: str) -> TokenRecord:
        """Revoke a token given its id, its plaintext, or a prefix (8+ hex digits) of its hash.

        `StoreError` when nothing or more than one token matches, or it is already revoked.
        """
        actor = check_name(actor, "actor")
        key = prefix_or_id
        if (isinstance(key, int) and not isinstance(key, bool)) or (isinstance(key, str) and key.isdigit()):
            condition, what = tokens_t.c.id == int(key), f"id {int(key)}"
        elif isinstance(key, str) and key.startswith(TOKEN_PREFIX):
            condition, what = tokens_t.c.token_hash == hash_token(key), "the given plaintext"
        elif isinstance(key, str) and len(key) >= 8 and all(c in "0123456789abcdef" for c in key.lower()):
            condition, what = tokens_t.c.token_hash.startswith(key.lower()), f"hash prefix {key!r}"
        else:
            raise StoreError(f"cannot identify a token by {prefix_or_id!r}; give its id, the token itself "
                             "or at least 8 hex digits of its hash (see list_tokens)")
        with self._write() as connection:
            rows = connection.execute(sa.select(tokens_t.c.id, tokens_t.c.revoked_at).where(condition)).all()
            if not rows:
                raise StoreError(f"no token matches {what}")
            if len(rows) > 1:
                raise StoreError(f"{len(rows)} tokens match {what}; give more digits or the id")
            if rows[0].revoked_at is not None:
                raise StoreError(f"token {rows[0].id} is already revoked (at {rows[0].revoked_at.isoformat()})")
            now = self.now()
            connection.execute(tokens_t.update().where(tokens_t.c.id == rows[0].id).values(revoked_at=now))
            self._event(connection, actor, "token_revoked", at=now, detail={"token_id": rows[0].id})
        return next(t for t in self.list_tokens() if t.id == rows[0].id)
