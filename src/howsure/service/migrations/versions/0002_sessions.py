"""Server-side sessions of the review pages: signing out ends a session everywhere.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Before this revision a session cookie was valid, wherever it was shown, until it expired (12 h
after signing in), even after the reviewer signed out. Now the cookie names a row of
``sessions`` (by the sha256 of a random id), and signing out marks the row ended: every
process serving the database sees it, also after a restart.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", name="fk_sessions_user_id"), nullable=False),
        sa.Column("token_id", sa.Integer, sa.ForeignKey("tokens.id", name="fk_sessions_token_id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.UniqueConstraint("session_hash", name="uq_sessions_session_hash"),
    )
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("sessions")
