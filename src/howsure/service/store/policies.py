"""Policy versions: add one (validated), read the active one, one version or the history, and
activate a version (a rollback when it is an older one)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from howsure.decisions.policy import Policy
from howsure.errors import StoreError
from howsure.service.db import policies as policies_t
from howsure.service.store.base import StoreBase, dumps
from howsure.service.store.records import PolicyRecord, policy_record
from howsure.service.store.validation import check_int, check_name, check_text

__all__ = ["PolicyStore"]


class PolicyStore(StoreBase):
    """The policies table: versions never change once stored; one of them is active."""

    def add_policy(self, body: dict[str, Any], *, actor: str, activate: bool = True,
                   note: str = "") -> PolicyRecord:
        """Store a policy as the next version (highest version + 1).

        Parameters
        ----------
        body : dict
            The policy JSON (`howsure.policy.Policy.to_dict`); validated with
            `howsure.policy.Policy.from_dict` (`PolicyError` when invalid). Stored as given,
            with ``policy_id`` filled in when missing.
        actor : str
            Who adds it (audit log).
        activate : bool
            Make it the active policy (the previously active one is deactivated).
        note : str
            Free text kept with the version ("recalibrated from 1,200 reviews").
        """
        # Local for weight: howsure.policy loads scipy, which the store's other users (the
        # CLI's user and token commands, the web app's start-up) need not pay for.

        actor = check_name(actor, "actor")
        note = check_text(note, "note")
        policy = Policy.from_dict(body)
        stored = dict(body)
        stored["policy_id"] = policy.policy_id
        blob = dumps(stored)

        def insert() -> int:
            with self._write() as connection:
                now = self.now()
                version = (connection.execute(sa.select(sa.func.max(policies_t.c.version))).scalar() or 0) + 1
                previous = self._active_version(connection) if activate else None
                if activate:
                    connection.execute(policies_t.update().where(policies_t.c.active.is_(True)).values(active=False))
                connection.execute(policies_t.insert().values(
                    version=version, policy_id=policy.policy_id, body=blob, created_at=now,
                    created_by=actor, active=activate, note=note,
                ))
                self._event(connection, actor, "policy_added", policy_version=version, at=now,
                            detail={"policy_id": policy.policy_id, "note": note, "active": activate})
                if activate:
                    self._event(connection, actor, "policy_activated", policy_version=version, at=now,
                                detail={"previous_version": previous})
                return version

        return self.get_policy(self._retrying(insert))

    def active_policy(self) -> PolicyRecord | None:
        """The active policy, or None when no policy was added yet."""
        row = self._first(sa.select(policies_t).where(policies_t.c.active.is_(True)))
        return None if row is None else policy_record(row)

    def get_policy(self, version: int) -> PolicyRecord:
        """The policy stored as ``version``; `StoreError` when there is none."""
        version = check_int(version, "policy version")
        row = self._first(sa.select(policies_t).where(policies_t.c.version == version))
        if row is None:
            raise StoreError(f"policy version {version} is not in the store; versions: {self._versions()}")
        return policy_record(row)

    def policy_history(self) -> list[PolicyRecord]:
        """Every stored policy version, newest first."""
        rows = self._rows(sa.select(policies_t).order_by(policies_t.c.version.desc()))
        return [policy_record(row) for row in rows]

    def activate_policy(self, version: int, *, actor: str) -> PolicyRecord:
        """Make ``version`` the active policy (a rollback when it is an older one).

        Activating the policy that is already active changes nothing and logs nothing.
        """
        version = check_int(version, "policy version")
        actor = check_name(actor, "actor")

        def activate() -> None:
            with self._write() as connection:
                row = connection.execute(sa.select(policies_t.c.active).where(policies_t.c.version == version)).first()
                if row is None:
                    raise StoreError(f"policy version {version} is not in the store; versions: {self._versions()}")
                if row.active:
                    return
                previous = self._active_version(connection)
                connection.execute(policies_t.update().where(policies_t.c.active.is_(True)).values(active=False))
                connection.execute(policies_t.update().where(policies_t.c.version == version).values(active=True))
                self._event(connection, actor, "policy_activated", policy_version=version,
                            detail={"previous_version": previous})

        self._retrying(activate)
        return self.get_policy(version)

    @staticmethod
    def _active_version(connection: sa.Connection) -> int | None:
        return connection.execute(sa.select(policies_t.c.version).where(policies_t.c.active.is_(True))).scalar()

    def _versions(self) -> list[int]:
        with self._read() as connection:
            return list(connection.execute(sa.select(policies_t.c.version).order_by(policies_t.c.version)).scalars())
